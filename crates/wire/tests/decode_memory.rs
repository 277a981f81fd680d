//! Peak memory of reading the worst message within the limits: documents nested
//! as deep as allowed around one string as long as allowed. Its own test binary,
//! because it measures the whole process's peak resident memory (VmHWM, reset
//! through /proc/self/clear_refs before the read).

use bson::{doc, Bson};
use octopoll_wire::io::Exchange;
use octopoll_wire::limits::Limits;
use octopoll_wire::message::RESPONSE_TYPE;
use octopoll_wire::{deflate, Envelope};
use tokio::io::AsyncWriteExt;

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn the_worst_nesting_within_the_limits_peaks_under_four_times_the_message_limit() {
    let limits = Limits::default();
    let limit = limits.max_message_bytes;
    // 62 documents, each the only field of the one around it, around a string
    // that fills the rest of the limit: bson's own conversion copied every
    // level (1.1 GiB of peak for this message).
    let mut value = Bson::String("x".repeat(limit - 4096));
    for _ in 0..60 {
        value = Bson::Document(doc! { "a": value });
    }
    let envelope = doc! {
        "Message": { "$type": RESPONSE_TYPE, "id": "x", "result": value },
    };
    let bytes = envelope.to_vec().unwrap();
    assert!(bytes.len() <= limit, "{} bytes", bytes.len());
    let mut wire = Vec::new();
    deflate::compress(&bytes, &mut wire);
    drop((envelope, bytes));
    assert!(wire.len() < 128 * 1024, "{} bytes deflated", wire.len());

    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let mut exchange = Exchange::new(reader, limits);
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak (VmHWM)");
    let before_kib = status_kib("VmRSS:");
    let (_, message) = tokio::join!(
        async {
            writer.write_all(&wire).await.unwrap();
        },
        exchange.read_message()
    );
    let message = message.unwrap().expect("a whole message");
    let peak_kib = status_kib("VmHWM:");
    assert!(matches!(message.envelope, Envelope::Response(_)));
    let grew = peak_kib.saturating_sub(before_kib) * 1024;
    println!(
        "reading a {} MiB message nested 62 deep peaked {:.1} MiB over the baseline",
        limit >> 20,
        grew as f64 / (1 << 20) as f64
    );
    assert!(
        grew <= 4 * limit as u64,
        "peak grew {grew} bytes, over 4 × the {limit}-byte limit"
    );
}
