//! `IFileTransferService.UploadFile`: takes the stream, hashes it, keeps nothing.
//!
//! A simulated Tentacle has no disk to fill; it answers with the `UploadResult` a
//! real one would (SHA-1 in lowercase hex), under the legacy `Octopus.Shared` name
//! Tentacle writes.

use bson::{doc, Bson};
use octopoll_wire::{DataStream, DataStreamRef, RequestMessage, ServerError};

use super::{method_not_found, CallResult};

pub(super) const SERVICE: &str = "IFileTransferService";

pub(super) fn call(request: &RequestMessage, streams: Vec<DataStream>) -> CallResult {
    if request.method != "UploadFile" {
        return Err(method_not_found("FileTransferService", &request.method));
    }
    let path = request
        .params
        .first()
        .and_then(Bson::as_str)
        .unwrap_or_default();
    let mut references = Vec::new();
    if let Some(param) = request.params.get(1) {
        DataStreamRef::find_all(param, &mut references);
    }
    let reference = references
        .first()
        .ok_or_else(|| ServerError::thrown("UploadFile takes a path and a DataStream"))?;
    let stream = streams
        .iter()
        .find(|s| s.id == reference.id)
        .ok_or_else(|| ServerError::thrown("the upload's data stream did not arrive"))?;
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &stream.bytes);
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let result = doc! {
        "$type": "Octopus.Shared.Contracts.UploadResult, Octopus.Shared",
        "FullPath": format!("/home/octopoll/{}", path.trim_start_matches('/')),
        "Hash": hash,
        "Length": stream.bytes.len() as i64,
    };
    Ok((Bson::Document(result), Vec::new()))
}
