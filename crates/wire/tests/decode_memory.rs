//! Peak memory of reading the worst messages within the limits. Its own test
//! binary with one test, because it measures the whole process's peak resident
//! memory (VmHWM, reset through /proc/self/clear_refs before each read).

use bson::{doc, Bson};
use octopoll_wire::io::Message;
use octopoll_wire::limits::Limits;
use octopoll_wire::message::RESPONSE_TYPE;
use octopoll_wire::{deflate, Envelope, Error, Exchange};
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

/// Reads `bson` as a peer would send it, deflated, and returns what the read
/// gave and how far the process's peak memory rose above where it stood.
async fn read_deflated(
    bson: Vec<u8>,
    limits: Limits,
) -> (octopoll_wire::Result<Option<Message>>, u64) {
    assert!(
        bson.len() <= limits.max_message_bytes,
        "{} bytes",
        bson.len()
    );
    let mut wire = Vec::new();
    deflate::compress(&bson, &mut wire);
    drop(bson);
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let mut exchange = Exchange::new(reader, limits);
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak (VmHWM)");
    let before_kib = status_kib("VmRSS:");
    let (_, read) = tokio::join!(
        async {
            writer.write_all(&wire).await.unwrap();
        },
        exchange.read_message()
    );
    let grew = status_kib("VmHWM:").saturating_sub(before_kib) * 1024;
    (read, grew)
}

/// A response whose result is `result`, as BSON bytes.
fn response(result: Bson) -> Vec<u8> {
    doc! { "Message": { "$type": RESPONSE_TYPE, "id": "x", "result": result } }
        .to_vec()
        .unwrap()
}

/// A response whose result is an array of `n` nulls, written by hand (bson's
/// own encoder would hold them all as values first).
fn nulls(n: usize) -> Vec<u8> {
    let mut array = vec![0u8; 4];
    for i in 0..n {
        array.push(0x0A);
        array.extend_from_slice(i.to_string().as_bytes());
        array.push(0);
    }
    array.push(0);
    let len = array.len() as i32;
    array[..4].copy_from_slice(&len.to_le_bytes());
    let mut bytes = response(Bson::Null);
    // Replace the null result (the document's last element) with the array.
    let at = bytes.len() - 2 - "result".len() - 2;
    assert_eq!(bytes[at], 0x0A);
    bytes.truncate(at);
    bytes.push(0x04);
    bytes.extend_from_slice(b"result\0");
    bytes.extend_from_slice(&array);
    bytes.extend_from_slice(&[0, 0]);
    let inner = bytes.len() - 4 - "Message".len() - 2 - 1;
    let inner_at = 4 + 1 + "Message".len() + 1;
    bytes[inner_at..inner_at + 4].copy_from_slice(&(inner as i32).to_le_bytes());
    let total = bytes.len() as i32;
    bytes[..4].copy_from_slice(&total.to_le_bytes());
    bytes
}

#[tokio::test(flavor = "current_thread")]
async fn the_worst_messages_within_the_limits_peak_under_four_times_the_message_limit() {
    let limits = Limits::default();
    let limit = limits.max_message_bytes;
    let bound = 4 * limit as u64;
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;

    // 62 documents, each the only field of the one around it, around a string
    // that fills the rest of the limit: bson's own conversion copied every
    // level (1,024 MiB of peak for this message).
    let mut value = Bson::String("x".repeat(limit - 4096));
    for _ in 0..60 {
        value = Bson::Document(doc! { "a": value });
    }
    let (read, grew) = read_deflated(response(value), limits).await;
    let message = read.unwrap().expect("a whole message");
    assert!(matches!(message.envelope, Envelope::Response(_)));
    drop(message);
    println!(
        "62 levels around a 16 MiB string: peak +{:.1} MiB",
        mib(grew)
    );
    assert!(
        grew <= bound,
        "nesting: peak grew {grew} bytes, over 4 × the {limit}-byte limit"
    );

    // As many empty values as the limit holds (1.6 million): 3 bytes each on
    // the wire, over a hundred decoded.
    let bytes = nulls(1_600_000);
    let (read, grew) = read_deflated(bytes, limits).await;
    let Err(error) = read else {
        panic!(
            "1.6 million empty values decoded (peak +{:.1} MiB) instead of being refused",
            mib(grew)
        );
    };
    assert!(
        matches!(
            error,
            Error::TooLong {
                what: "decoded message",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.code(), "message-too-large");
    println!(
        "1.6 million empty values: refused, peak +{:.1} MiB",
        mib(grew)
    );
    assert!(
        grew <= bound,
        "tiny values: peak grew {grew} bytes, over 4 × the {limit}-byte limit"
    );
}
