//! The abuse suite: hostile peers against a real node on loopback. Each case
//! shows the offending connection closed with its specific reason counted in the
//! node's `close_reasons`, no panic, the memory it took given back, and the swarm's
//! agents still answering on every node.
//!
//! Memory is counted by the allocator of this test binary ([`Counting`]), so the
//! cases run one at a time (`SERIAL`): each compares the bytes allocated before
//! and after its abuse, with the swarm warmed up first, holds the peak while it
//! runs under [`PEAK_BUDGET`], and prints that peak per abuser (the figures in
//! docs/LIMITS.md: `cargo test -p octopoll-tests --test abuse -- --nocapture`).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::Bson;
use octopoll_lab::{Lab, LabConfig};
use octopoll_node::{FailReason, Node, NodeConfig};
use octopoll_wire::{DataStream, DataStreamRef, Envelope, Limits, ResponseMessage};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::{connect_raw, register_raw_agent, wait_until};

#[global_allocator]
static ALLOCATOR: Counting = Counting::new();

/// The system allocator, counting the bytes allocated now and their peak since
/// the last [`Counting::reset_peak`], and refusing (a null pointer, which aborts
/// the binary) any allocation that would go past its limit. `cap` does the
/// refusing too, but its peak cannot be reset between cases.
struct Counting {
    allocated: AtomicUsize,
    peak: AtomicUsize,
    limit: AtomicUsize,
}

impl Counting {
    const fn new() -> Self {
        Self {
            allocated: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            limit: AtomicUsize::new(usize::MAX),
        }
    }

    fn allocated(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    /// The most allocated at once since the last reset.
    fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Refuses allocations past `limit` bytes from now on, and starts a new peak.
    fn limit_to(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        self.peak.store(self.allocated(), Ordering::Relaxed);
    }

    fn reserve(&self, size: usize) -> bool {
        let now = self.allocated.fetch_add(size, Ordering::Relaxed) + size;
        if now > self.limit.load(Ordering::Relaxed) {
            self.allocated.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        self.peak.fetch_max(now, Ordering::Relaxed);
        true
    }

    fn release(&self, size: usize) {
        self.allocated.fetch_sub(size, Ordering::Relaxed);
    }
}

// SAFETY: every call goes to `System` with the caller's layout; the counters
// only decide whether to call it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        let pointer = unsafe { System.alloc(layout) };
        if pointer.is_null() {
            self.release(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(pointer, layout) };
        self.release(layout.size());
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grow = new_size.saturating_sub(layout.size());
        if grow > 0 && !self.reserve(grow) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if moved.is_null() {
            self.release(grow);
        } else {
            self.release(layout.size().saturating_sub(new_size));
        }
        moved
    }
}

/// One case at a time: the allocator's count is the whole binary's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Abusive connections per case, all open at once: enough that a per-connection
/// leak of a few KiB shows above [`MEMORY_SLACK`], and that a per-connection peak
/// times fifty stays under [`PEAK_BUDGET`] only if each is bounded.
const ABUSERS: usize = 50;
/// What a case may leave allocated beyond its baseline (log buffers, the
/// reason table, the swarm's own variation).
const MEMORY_SLACK: usize = 512 * 1024;
/// Most the whole binary may allocate above its baseline at any moment while a
/// case's abuse runs: the allocator refuses past it, which aborts the run, so a
/// limit that lets a peer make the node buffer what it announces cannot pass.
/// Payloads are built before the abuse starts.
const PEAK_BUDGET: usize = 64 * 1024 * 1024;

/// A one-node lab with two agents and short deadlines, `tweak`ed.
async fn abuse_lab(tweak: impl FnOnce(&mut NodeConfig)) -> Lab {
    common::init_logging();
    let mut config = LabConfig::new(1, 2);
    let node = &mut config.cluster.node;
    node.handshake_timeout = Duration::from_secs(1);
    node.identification_timeout = Duration::from_secs(1);
    node.api_header_timeout = Duration::from_secs(1);
    node.api_request_timeout = Duration::from_secs(2);
    tweak(node);
    let lab = Lab::start(config).await.expect("lab starts");
    common::ready(&lab).await;
    lab
}

/// Runs `abuse` against `lab` and checks the aftermath: the node counts
/// `reason` at least `times`, holds no unauthenticated connection and only the
/// swarm's connections, the swarm still answers, and memory is back within
/// [`MEMORY_SLACK`] of where it was.
async fn check_abuse<T>(lab: &Lab, reason: &str, times: u64, abuse: impl Future<Output = T>) -> T {
    let node = &lab.cluster.nodes()[0];
    let held = node.stats().connections;
    common::swarm_still_works(lab).await;
    let before = ALLOCATOR.allocated();
    ALLOCATOR.limit_to(before + PEAK_BUDGET);
    let out = abuse.await;
    let peak = ALLOCATOR.peak().saturating_sub(before);
    ALLOCATOR.limit_to(usize::MAX);
    println!(
        "{reason}: peak {} KiB above the baseline for {times} abusers, {:.1} KiB each",
        peak / 1024,
        peak as f64 / 1024.0 / times.max(1) as f64
    );
    let stats = wait_until(
        Duration::from_secs(10),
        &format!("{times} × {reason} counted and the abusers gone"),
        || node.stats(),
        |s| {
            s.close_reasons.get(reason).copied().unwrap_or(0) >= times
                && s.unauthenticated == 0
                && s.connections == held
        },
    )
    .await;
    common::swarm_still_works(lab).await;
    let after = ALLOCATOR.allocated();
    assert!(
        after <= before + MEMORY_SLACK,
        "memory after {reason}: {after} bytes, {} KiB over the baseline of {before} (slack {} KiB); reasons {:?}",
        (after.saturating_sub(before)) / 1024,
        MEMORY_SLACK / 1024,
        stats.close_reasons
    );
    out
}

/// TLS to `node` without a client certificate, pinning the node.
async fn tls_without_certificate(
    node: &Node,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tls = octopoll_pki::tls::https_client_config(node.thumbprint()).unwrap();
    let tcp = TcpStream::connect(node.comms_addr()).await?;
    TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Reads until the peer closes (or 5 s pass, which fails the test).
async fn closed_by_peer(stream: &mut (impl AsyncReadExt + Unpin)) {
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the node closes the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_comms_port_is_cut_off_at_the_handshake_deadline() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let node = &lab.cluster.nodes()[0];
    check_abuse(&lab, "handshake-timeout", ABUSERS as u64, async {
        // Each sends the start of a TLS record, a byte every 200 ms.
        let mut abusers = Vec::new();
        for _ in 0..ABUSERS {
            abusers.push(TcpStream::connect(node.comms_addr()).await.unwrap());
        }
        let record = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
        for byte in record {
            for abuser in &mut abusers {
                let _ = abuser.write_all(&[byte]).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for abuser in &mut abusers {
            closed_by_peer(abuser).await;
        }
    })
    .await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_api_is_cut_off_at_the_header_deadline() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let node = &lab.cluster.nodes()[0];
    check_abuse(&lab, "api-header-timeout", ABUSERS as u64, async {
        let tls = octopoll_pki::tls::https_client_config(node.thumbprint()).unwrap();
        let connector = TlsConnector::from(Arc::new(tls));
        let mut abusers = Vec::new();
        for _ in 0..ABUSERS {
            let tcp = TcpStream::connect(node.api_addr()).await.unwrap();
            let mut stream = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            stream
                .write_all(b"POST /api/machines HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            abusers.push(stream);
        }
        for _ in 0..8 {
            for abuser in &mut abusers {
                let _ = abuser.write_all(b"X-A: b\r\n").await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for abuser in &mut abusers {
            closed_by_peer(abuser).await;
        }
    })
    .await;
    // The API still answers a well-behaved caller.
    common::register_raw_agent(&lab, "after-slowloris").await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_api_cap_are_closed_at_once_and_the_api_still_serves() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|node| node.max_api_connections = 8).await;
    let node = &lab.cluster.nodes()[0];
    let past = (ABUSERS - 8) as u64;
    check_abuse(&lab, "api-connection-limit", past, async {
        // Silent clients: 8 hold the API's slots, the rest are closed at once.
        let mut silent = Vec::new();
        for _ in 0..ABUSERS {
            silent.push(TcpStream::connect(node.api_addr()).await.unwrap());
        }
        let mut closed = 0;
        for stream in &mut silent {
            let mut byte = [0u8; 1];
            let read =
                tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await;
            if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
                closed += 1;
            }
        }
        assert_eq!(closed, ABUSERS - 8, "all but the cap closed at once");
        // The holders leave; their slots are free again.
        drop(silent);
    })
    .await;
    // The API still answers a well-behaved caller.
    common::register_raw_agent(&lab, "after-the-cap").await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_fail_the_tls_handshake() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let node = &lab.cluster.nodes()[0];
    check_abuse(&lab, "tls-handshake-failed", ABUSERS as u64, async {
        for i in 0..ABUSERS {
            let mut tcp = TcpStream::connect(node.comms_addr()).await.unwrap();
            let garbage: Vec<u8> = (0..512).map(|j| (i * 31 + j * 7) as u8).collect();
            let _ = tcp.write_all(&garbage).await;
            closed_by_peer(&mut tcp).await;
        }
    })
    .await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_without_a_certificate_is_refused() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let node = &lab.cluster.nodes()[0];
    check_abuse(&lab, "no-client-certificate", ABUSERS as u64, async {
        for _ in 0..ABUSERS {
            // TLS 1.3: the client finishes first; the refusal comes as an alert.
            if let Ok(mut stream) = tls_without_certificate(node).await {
                let _ = stream.write_all(b"MX\r\n\r\n").await;
                closed_by_peer(&mut stream).await;
            }
        }
    })
    .await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_after_tls_is_cut_off_at_the_identification_deadline() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let (identity, _) = register_raw_agent(&lab, "mute").await;
    let node = &lab.cluster.nodes()[0];
    check_abuse(&lab, "identification-timeout", ABUSERS as u64, async {
        let mut abusers = Vec::new();
        for _ in 0..ABUSERS {
            abusers.push(connect_raw(node, &identity).await);
        }
        for abuser in &mut abusers {
            closed_by_peer(abuser.get_mut()).await;
        }
    })
    .await;
    lab.stop().await;
}

/// [`ABUSERS`] peers, each registered, identified and holding one request it
/// collected, all open at once; then each `misbehaves`. Returns how their requests
/// ended, which must be one way for all of them.
async fn abusers_take_a_request_then(
    lab: &Lab,
    name: &str,
    misbehave: impl AsyncFn(
        &mut octopoll_wire::Exchange<tokio_rustls::client::TlsStream<TcpStream>>,
        String,
    ),
) -> Result<(), FailReason> {
    let mut peers = Vec::with_capacity(ABUSERS);
    for n in 0..ABUSERS {
        peers.push(common::collect_a_request(lab, &format!("{name}-{n}")).await);
    }
    for (exchange, id, _) in &mut peers {
        misbehave(exchange, id.clone()).await;
    }
    let mut outcomes = Vec::with_capacity(ABUSERS);
    for (mut exchange, _, call) in peers {
        let outcome = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the request ends in time")
            .unwrap();
        closed_by_peer(exchange.get_mut()).await;
        outcomes.push(outcome.result.map(|_| ()));
    }
    let first = outcomes[0];
    assert!(
        outcomes.iter().all(|outcome| *outcome == first),
        "every abuser's request ends the same way: {outcomes:?}"
    );
    first
}

/// [`ABUSERS`] peers, each registered and identified, all open at once; then
/// each `misbehaves` and is closed by the node.
async fn abusers_identify_then(
    lab: &Lab,
    name: &str,
    misbehave: impl AsyncFn(&mut octopoll_wire::Exchange<tokio_rustls::client::TlsStream<TcpStream>>),
) {
    let node = &lab.cluster.nodes()[0];
    let mut peers = Vec::with_capacity(ABUSERS);
    for n in 0..ABUSERS {
        let (identity, subscription) = register_raw_agent(lab, &format!("{name}-{n}")).await;
        peers.push(common::identify_raw(node, &identity, &subscription).await);
    }
    for exchange in &mut peers {
        misbehave(exchange).await;
    }
    for mut exchange in peers {
        closed_by_peer(exchange.get_mut()).await;
    }
}

fn echo_response(id: String) -> Envelope {
    Envelope::Response(ResponseMessage {
        id,
        error: None,
        result: Bson::from("x..."),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_without_a_response_fails_the_request_as_a_protocol_error() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let outcome = check_abuse(
        &lab,
        "control-line-instead-of-response",
        ABUSERS as u64,
        async {
            abusers_take_a_request_then(&lab, "skipper", async |exchange, _| {
                exchange
                    .write_control(octopoll_wire::ControlMessage::Next)
                    .await
                    .unwrap();
            })
            .await
        },
    )
    .await;
    assert_eq!(outcome, Err(FailReason::ProtocolError));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_nobody_asked_for_is_an_unsolicited_message() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let node = &lab.cluster.nodes()[0];
    check_abuse(&lab, "unsolicited-message", ABUSERS as u64, async {
        abusers_identify_then(&lab, "chatterbox", async |exchange| {
            exchange
                .write_message(&echo_response("never-sent".into()), &[])
                .await
                .unwrap();
        })
        .await
    })
    .await;
    assert_eq!(
        node.stats().anomalies,
        0,
        "nothing was in flight to mismatch"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_for_an_id_never_sent_fails_the_request_in_flight() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let outcome = check_abuse(&lab, "response-id-mismatch", ABUSERS as u64, async {
        abusers_take_a_request_then(&lab, "impostor", async |exchange, _| {
            let _ = exchange
                .write_message(&echo_response("ISomething::Else[7] / never".into()), &[])
                .await;
        })
        .await
    })
    .await;
    assert_eq!(outcome, Err(FailReason::ProtocolError));
    assert_eq!(lab.cluster.nodes()[0].stats().anomalies, ABUSERS as u64);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_starting_with_e_where_next_is_due_is_a_message_not_a_control_line() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let outcome = check_abuse(&lab, "message-instead-of-next", ABUSERS as u64, async {
        abusers_take_a_request_then(&lab, "lookalike", async |exchange, id| {
            exchange
                .write_message(&echo_response(id), &[])
                .await
                .unwrap();
            // 0x45 ('E') opens a final dynamic-Huffman DEFLATE block: a message,
            // though its first byte is the first of END.
            let _ = exchange
                .write_raw(
                    &[0x45, 0x8c, 0x31, 0x0e, 0x00],
                    "a message where NEXT is due",
                )
                .await;
        })
        .await
    })
    .await;
    assert_eq!(
        outcome,
        Ok(()),
        "the response before it completes the request"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_sent_twice_completes_once_and_closes_the_connection() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let outcome = check_abuse(&lab, "message-instead-of-next", ABUSERS as u64, async {
        abusers_take_a_request_then(&lab, "stutterer", async |exchange, id| {
            exchange
                .write_message(&echo_response(id.clone()), &[])
                .await
                .unwrap();
            let _ = exchange.write_message(&echo_response(id), &[]).await;
        })
        .await
    })
    .await;
    assert_eq!(outcome, Ok(()), "the first response completes the request");
    let stats = lab.cluster.nodes()[0].stats();
    assert_eq!(
        stats.anomalies, 0,
        "the second copy is not an anomaly of another request"
    );
    assert_eq!(
        stats.requests_created,
        stats.requests_completed + stats.requests_failed,
        "every request ended once: {stats:?}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_stream_whose_trailer_differs_fails_the_request() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let outcome = check_abuse(&lab, "stream-length-mismatch", ABUSERS as u64, async {
        abusers_take_a_request_then(&lab, "fibber", async |exchange, id| {
            let stream = DataStream::new(vec![7u8; 100]);
            let response = Envelope::Response(ResponseMessage {
                id,
                error: None,
                result: DataStreamRef::to_bson(stream.reference(), true),
            });
            let mut bytes = Vec::new();
            octopoll_wire::deflate::compress(&response.to_bson_bytes().unwrap(), &mut bytes);
            stream.encode(&mut bytes);
            let trailer = bytes.len() - 8;
            bytes[trailer..].copy_from_slice(&99i64.to_le_bytes());
            let _ = exchange.write_raw(&bytes, "a lying stream").await;
        })
        .await
    })
    .await;
    assert_eq!(outcome, Err(FailReason::ProtocolError));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_refused_at_the_message_limit() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|node| {
        node.limits = Limits {
            max_message_bytes: 1024 * 1024,
            ..Limits::default()
        }
    })
    .await;
    // 64 MiB of one letter: some 64 KiB on the wire. Built before the abuse,
    // whose peak is held under PEAK_BUDGET: the node must never inflate it all.
    // (The node stops at the limit, before it could read the response's id.)
    let response = Envelope::Response(ResponseMessage {
        id: "bomb".into(),
        error: None,
        result: Bson::String("a".repeat(64 * 1024 * 1024)),
    });
    let mut bomb = Vec::new();
    octopoll_wire::deflate::compress(&response.to_bson_bytes().unwrap(), &mut bomb);
    drop(response);
    assert!(bomb.len() < 1024 * 1024, "a bomb: {} bytes", bomb.len());
    let outcome = check_abuse(&lab, "message-too-large", ABUSERS as u64, async {
        abusers_take_a_request_then(&lab, "bomber", async |exchange, _| {
            let _ = exchange.write_raw(&bomb, "a bomb").await;
        })
        .await
    })
    .await;
    assert_eq!(outcome, Err(FailReason::ProtocolError));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_of_nested_code_with_scope_is_refused_without_a_crash() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let bytes = common::nested_code_with_scope(10_000);
    assert!(bytes.len() < 64 * 1024, "{} bytes", bytes.len());
    let outcome = check_abuse(&lab, "bad-bson", ABUSERS as u64, async {
        abusers_take_a_request_then(&lab, "scoper", async |exchange, _| {
            let _ = exchange.write_raw(&bytes, "nested code-with-scope").await;
        })
        .await
    })
    .await;
    assert_eq!(outcome, Err(FailReason::ProtocolError));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_line_past_the_limit_is_refused() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let node = &lab.cluster.nodes()[0];
    let mut identities = Vec::with_capacity(ABUSERS);
    for n in 0..ABUSERS {
        identities.push(register_raw_agent(&lab, &format!("rambler-{n}")).await.0);
    }
    let line = format!("MX-SUBSCRIBER 1.0 poll://{}/", "a".repeat(4096));
    check_abuse(&lab, "line-too-long", ABUSERS as u64, async {
        let mut peers = Vec::with_capacity(ABUSERS);
        for identity in &identities {
            let mut exchange = connect_raw(node, identity).await;
            exchange.write_preamble().await.unwrap();
            let _ = exchange
                .write_raw(line.as_bytes(), "an endless identity")
                .await;
            peers.push(exchange);
        }
        for mut exchange in peers {
            closed_by_peer(exchange.get_mut()).await;
        }
    })
    .await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_unauthenticated_cap_are_closed_at_once() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|node| node.max_unauthenticated_connections = 4).await;
    let node = &lab.cluster.nodes()[0];
    check_abuse(&lab, "unauthenticated-limit", ABUSERS as u64, async {
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(TcpStream::connect(node.comms_addr()).await.unwrap());
        }
        wait_until(
            Duration::from_secs(5),
            "4 unauthenticated connections",
            || node.stats().unauthenticated,
            |&n| n == 4,
        )
        .await;
        let mut past = Vec::with_capacity(ABUSERS);
        for _ in 0..ABUSERS {
            past.push(TcpStream::connect(node.comms_addr()).await.unwrap());
        }
        for stream in &mut past {
            let mut byte = [0u8; 1];
            let read =
                tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "each past the cap is closed at once, long before the 1 s handshake deadline: {read:?}"
            );
        }
        // Identified connections are not counted against the cap.
        common::swarm_still_works(&lab).await;
    })
    .await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_subscription_cap_are_closed_before_mx_server() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|node| node.max_connections_per_subscription = 2).await;
    let mut greedy = Vec::with_capacity(ABUSERS);
    for n in 0..ABUSERS {
        greedy.push(register_raw_agent(&lab, &format!("greedy-{n}")).await);
    }
    let node = &lab.cluster.nodes()[0];
    check_abuse(
        &lab,
        "subscription-connection-limit",
        ABUSERS as u64,
        async {
            let mut held = Vec::with_capacity(2 * ABUSERS);
            for (identity, subscription) in &greedy {
                held.push(common::identify_raw(node, identity, subscription).await);
                held.push(common::identify_raw(node, identity, subscription).await);
                let mut third = connect_raw(node, identity).await;
                third.write_preamble().await.unwrap();
                third
                    .write_identity(&octopoll_wire::RemoteIdentity::Subscriber(
                        subscription.clone(),
                    ))
                    .await
                    .unwrap();
                assert!(
                    third.read_identity().await.is_err(),
                    "no MX-SERVER for the third"
                );
            }
            assert_eq!(
                node.stats().connections,
                2 + 2 * ABUSERS,
                "the swarm's two and each greedy subscription's two"
            );
            drop(held);
        },
    )
    .await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_past_the_rate_get_429_and_the_client_waits_its_turn() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|node| {
        node.registrations_per_second = 1;
        node.registration_burst = 1;
    })
    .await;
    let node = &lab.cluster.nodes()[0];
    let url = format!("{}/api/machines", node.api_url());
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(
            octopoll_pki::tls::https_client_config(node.thumbprint()).unwrap(),
        )
        .build()
        .unwrap();
    let key = common::api_key(&lab);
    let post = || {
        http.post(&url)
            .header("X-Octopus-ApiKey", key.expose())
            .json(&serde_json::json!({"Name": "flood", "Endpoint": {"CommunicationStyle": "TentacleActive", "Uri": "poll://floodfloodfloodfloodf/", "Thumbprint": "00"}}))
            .send()
    };
    // The swarm's registrations spent the burst; a second later it is one again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A body past the limit is refused before it is parsed; it spends the burst of one.
    let huge = http
        .post(&url)
        .header("X-Octopus-ApiKey", key.expose())
        .header("content-type", "application/json")
        .body(vec![b' '; 128 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    // The next within the second is refused, saying when to come back.
    let refused = post().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // The registration client honours Retry-After and gets through.
    let started = std::time::Instant::now();
    register_raw_agent(&lab, "patient").await;
    assert!(started.elapsed() >= Duration::from_millis(200), "it waited");
    common::swarm_still_works(&lab).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_stream_past_the_limit_is_refused_before_it_is_buffered() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|node| {
        node.limits = Limits {
            max_stream_bytes: 64 * 1024,
            ..Limits::default()
        }
    })
    .await;
    let outcome = check_abuse(&lab, "stream-too-large", ABUSERS as u64, async {
        abusers_take_a_request_then(&lab, "hoarder", async |exchange, id| {
            // Announces 1 GiB; sends only the header.
            let stream = DataStreamRef {
                id: DataStream::new(Vec::new()).id,
                length: 1 << 30,
            };
            let response = Envelope::Response(ResponseMessage {
                id,
                error: None,
                result: DataStreamRef::to_bson(stream, true),
            });
            let mut bytes = Vec::new();
            octopoll_wire::deflate::compress(&response.to_bson_bytes().unwrap(), &mut bytes);
            bytes.extend_from_slice(&stream.id.to_bytes_le());
            bytes.extend_from_slice(&stream.length.to_le_bytes());
            let _ = exchange.write_raw(&bytes, "a huge stream header").await;
            // Then the body, 16 × the limit of it, as fast as the node takes it:
            // refused at the header, the node reads none of it into memory.
            let body = vec![7u8; 64 * 1024];
            for _ in 0..16 {
                if exchange
                    .write_raw(&body, "a huge stream's body")
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
        .await
    })
    .await;
    assert_eq!(outcome, Err(FailReason::ProtocolError));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_body_trickled_past_the_request_deadline_gets_408() {
    let _one = SERIAL.lock().await;
    let lab = abuse_lab(|_| {}).await;
    let node = &lab.cluster.nodes()[0];
    let tls = Arc::new(octopoll_pki::tls::https_client_config(node.thumbprint()).unwrap());
    let key = common::api_key(&lab);
    let head = format!(
        "POST /api/machines HTTP/1.1\r\nHost: x\r\nX-Octopus-ApiKey: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        key.expose()
    );
    common::swarm_still_works(&lab).await;
    let before = ALLOCATOR.allocated();
    ALLOCATOR.limit_to(before + PEAK_BUDGET);
    // Each sends one byte of the hundred announced, then nothing: the 2 s request
    // deadline passes for all of them at once.
    let mut tricklers = Vec::with_capacity(ABUSERS);
    for _ in 0..ABUSERS {
        let tcp = TcpStream::connect(node.api_addr()).await.unwrap();
        let mut stream = TlsConnector::from(tls.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        tricklers.push(stream);
    }
    for stream in &mut tricklers {
        let mut answer = Vec::new();
        let reader = async {
            let mut buf = [0u8; 512];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        answer.extend_from_slice(&buf[..n]);
                        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the node answers within its deadline");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    drop(tricklers);
    let peak = ALLOCATOR.peak().saturating_sub(before);
    ALLOCATOR.limit_to(usize::MAX);
    println!(
        "api-request-timeout: peak {} KiB above the baseline for {ABUSERS} abusers, {:.1} KiB each",
        peak / 1024,
        peak as f64 / 1024.0 / ABUSERS as f64
    );
    common::register_raw_agent(&lab, "after-trickle").await;
    common::swarm_still_works(&lab).await;
    lab.stop().await;
}
