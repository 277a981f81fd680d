//! The HTTP API end to end: each toxic added through it, shown acting on a live
//! connection, and toxiproxy's error answers.

use std::io;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{serve, ListenPolicy};
use crate::testutil::{await_connections, connect, read_to_close, round_trip, within, Lab};
use crate::Chaos;

/// Bytes sent from 0 up, wrapping, so order and completeness can be checked.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_is_json() {
    let lab = Lab::start().await;
    let answer = lab.get("/version").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, json!({"version": env!("CARGO_PKG_VERSION")}));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn populate_creates_replaces_and_keeps_proxies() {
    let lab = Lab::start().await;
    let kept = lab.proxy("kept").await;
    lab.toxic(
        "kept",
        json!({"type": "latency", "attributes": {"latency": 1}}),
    )
    .await;
    let replaced = lab.proxy("replaced").await;
    let upstream = lab.echo.addr.to_string();
    let answer = lab
        .post(
            "/populate",
            &json!([
                {"name": "kept", "listen": kept.to_string(), "upstream": upstream},
                {"name": "replaced", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9", "enabled": false},
                {"name": "new", "listen": "127.0.0.1:0", "upstream": upstream},
            ]),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let proxies = answer.body["proxies"].as_array().unwrap();
    let names: Vec<&str> = proxies
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kept", "replaced", "new"], "in the list's order");
    assert_eq!(
        proxies[0]["toxics"].as_array().unwrap().len(),
        1,
        "kept as it was"
    );
    assert_eq!(proxies[1]["upstream"], "127.0.0.1:9");
    assert_eq!(proxies[1]["enabled"], false);
    assert_ne!(proxies[1]["listen"], replaced.to_string());
    let new: std::net::SocketAddr = proxies[2]["listen"].as_str().unwrap().parse().unwrap();
    round_trip(&mut connect(new).await, b"through a populated proxy").await;
    round_trip(&mut connect(kept).await, b"through a kept proxy").await;

    // A bad list changes nothing: a public listen address, a name twice.
    for (list, status) in [
        (
            json!([{"name": "x", "listen": "0.0.0.0:0", "upstream": upstream}]),
            403,
        ),
        (
            json!([{"name": "y", "listen": "127.0.0.1:0", "upstream": upstream},
                {"name": "y", "listen": "127.0.0.1:0", "upstream": upstream}]),
            400,
        ),
        (json!({"name": "z"}), 400),
    ] {
        let refused = lab.post("/populate", &list).await;
        assert_eq!(refused.status, status, "{}", refused.body);
        assert_eq!(refused.body["status"], status);
    }
    let all = lab.get("/proxies").await.body;
    let names: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(names, ["kept", "new", "replaced"]);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_are_created_listed_shown_and_deleted() {
    let lab = Lab::start().await;
    let listen = lab.proxy("node1").await;

    let all = lab.get("/proxies").await;
    assert_eq!(all.status, 200);
    let node1 = &all.body["node1"];
    assert_eq!(node1["name"], "node1");
    assert_eq!(node1["listen"], listen.to_string());
    assert_eq!(node1["upstream"], lab.echo.addr.to_string());
    assert_eq!(node1["enabled"], true);
    assert_eq!(node1["toxics"], json!([]));

    let one = lab.get("/proxies/node1").await;
    assert_eq!(one.status, 200);
    assert_eq!(&one.body, node1);
    round_trip(&mut connect(listen).await, b"through the API's proxy").await;

    assert_eq!(lab.delete("/proxies/node1").await.status, 204);
    let gone = lab.get("/proxies/node1").await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.body["status"], 404);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_answer_toxiproxy_json() {
    let lab = Lab::start().await;
    let listen = lab.proxy("p").await;
    let latency = json!({"type": "latency", "attributes": {"latency": 10}});
    lab.toxic("p", latency.clone()).await;

    let duplicate_proxy = json!({"name": "p", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"});
    let busy_port = json!({"name": "q", "listen": listen.to_string(), "upstream": "127.0.0.1:1"});
    let cases = [
        (lab.get("/proxies/nope").await, 404, "nope"),
        (lab.delete("/proxies/nope").await, 404, "nope"),
        (
            lab.post("/proxies/nope/toxics", &latency).await,
            404,
            "nope",
        ),
        (lab.get("/proxies/p/toxics/nope").await, 404, "nope"),
        (lab.delete("/proxies/p/toxics/nope").await, 404, "nope"),
        (
            lab.post("/proxies", &duplicate_proxy).await,
            409,
            "already exists",
        ),
        (
            lab.post("/proxies/p/toxics", &latency).await,
            409,
            "latency_downstream",
        ),
        (
            lab.post("/proxies", &busy_port).await,
            500,
            "could not listen",
        ),
        (
            lab.post_raw("/proxies", "{not json").await,
            400,
            "bad request body",
        ),
        (
            lab.post("/proxies/p/toxics", &json!({"type": "bogus"}))
                .await,
            400,
            "unknown toxic type `bogus`",
        ),
        (
            lab.post(
                "/proxies/p/toxics",
                &json!({"type": "slicer", "attributes": {"average_size": 2, "size_variation": 3}}),
            )
            .await,
            400,
            "size_variation",
        ),
        (
            lab.post(
                "/proxies/p/toxics",
                &json!({"type": "bandwidth", "attributes": {"rate": 0}}),
            )
            .await,
            400,
            "rate",
        ),
        (
            lab.post(
                "/proxies/p/toxics/latency_downstream",
                &json!({"toxicity": 3.0}),
            )
            .await,
            400,
            "toxicity",
        ),
    ];
    for (answer, status, mention) in cases {
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.body["status"], status, "{}", answer.body);
        let error = answer.body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(mention),
            "{error:?} should mention {mention:?}"
        );
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxics_are_added_shown_updated_and_removed() {
    let lab = Lab::start().await;
    lab.proxy("p").await;
    let added = lab
        .toxic(
            "p",
            json!({"type": "latency", "attributes": {"latency": 10, "jitter": 2}}),
        )
        .await;
    let expected = json!({
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 10, "jitter": 2},
    });
    assert_eq!(added, expected);
    assert_eq!(lab.get("/proxies/p/toxics").await.body, json!([expected]));
    assert_eq!(
        lab.get("/proxies/p/toxics/latency_downstream").await.body,
        expected
    );

    // PATCH, as toxiproxy's Go client's UpdateToxic sends; POST does the same.
    let updated = lab
        .patch(
            "/proxies/p/toxics/latency_downstream",
            &json!({"attributes": {"latency": 50}, "toxicity": 0.5}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(
        updated.body["attributes"],
        json!({"latency": 50, "jitter": 2})
    );
    assert_eq!(updated.body["toxicity"], 0.5);
    assert_eq!(lab.get("/proxies/p").await.body["toxics"][0], updated.body);
    let posted = lab
        .post(
            "/proxies/p/toxics/latency_downstream",
            &json!({"attributes": {"jitter": 3}}),
        )
        .await;
    assert_eq!(
        posted.body["attributes"],
        json!({"latency": 50, "jitter": 3})
    );
    let disabled = lab.patch("/proxies/p", &json!({"enabled": false})).await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    assert_eq!(disabled.body["enabled"], false);

    assert_eq!(
        lab.delete("/proxies/p/toxics/latency_downstream")
            .await
            .status,
        204
    );
    assert_eq!(lab.get("/proxies/p/toxics").await.body, json!([]));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_a_round_trip() {
    let lab = Lab::start().await;
    let listen = lab.proxy("slow").await;
    let mut client = connect(listen).await;
    round_trip(&mut client, b"warm up").await;
    lab.toxic(
        "slow",
        json!({"type": "latency", "attributes": {"latency": 300, "jitter": 0}}),
    )
    .await;
    let start = Instant::now();
    round_trip(&mut client, b"delayed").await;
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_limits_throughput() {
    let lab = Lab::start().await;
    let listen = lab.proxy("narrow").await;
    let mut client = connect(listen).await;
    round_trip(&mut client, b"warm up").await;
    // 100 KB/s: 50 KB take half a second.
    lab.toxic(
        "narrow",
        json!({"type": "bandwidth", "attributes": {"rate": 100}}),
    )
    .await;
    let data = pattern(50_000);
    let start = Instant::now();
    let (mut read, mut write) = client.split();
    let send = async {
        write.write_all(&data).await.unwrap();
    };
    let receive = async {
        let mut back = vec![0; data.len()];
        read.read_exact(&mut back).await.unwrap();
        back
    };
    let ((), back) = within("50 KB at 100 KB/s", async { tokio::join!(send, receive) }).await;
    assert!(back == data, "the data changed on the way");
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_zero_holds_data_until_removed() {
    let lab = Lab::start().await;
    let listen = lab.proxy("stall").await;
    let mut client = connect(listen).await;
    round_trip(&mut client, b"warm up").await;
    lab.toxic(
        "stall",
        json!({"type": "timeout", "attributes": {"timeout": 0}}),
    )
    .await;
    within("write", client.write_all(b"held")).await.unwrap();
    let mut buf = [0; 4];
    let early = tokio::time::timeout(Duration::from_millis(300), client.read(&mut buf)).await;
    assert!(early.is_err(), "data passed a timeout toxic: {early:?}");

    assert_eq!(
        lab.delete("/proxies/stall/toxics/timeout_downstream")
            .await
            .status,
        204
    );
    within("released data", client.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"held");
    round_trip(&mut client, b"flowing again").await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_closes_the_connection() {
    let lab = Lab::start().await;
    let listen = lab.proxy("stop").await;
    let mut client = connect(listen).await;
    round_trip(&mut client, b"warm up").await;
    let start = Instant::now();
    lab.toxic(
        "stop",
        json!({"type": "timeout", "attributes": {"timeout": 200}}),
    )
    .await;
    let (received, _) = read_to_close(&mut client).await;
    assert!(received.is_empty());
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    await_connections(&lab.chaos, "stop", 0).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_peer_resets_the_connection() {
    let lab = Lab::start().await;
    let listen = lab.proxy("rst").await;
    let mut client = connect(listen).await;
    round_trip(&mut client, b"warm up").await;
    lab.toxic(
        "rst",
        json!({"type": "reset_peer", "attributes": {"timeout": 0}}),
    )
    .await;
    let (received, ended) = read_to_close(&mut client).await;
    assert!(received.is_empty());
    assert_reset(ended);

    // With a timeout, the reset comes no sooner.
    let start = Instant::now();
    let updated = lab
        .post(
            "/proxies/rst/toxics/reset_peer_downstream",
            &json!({"attributes": {"timeout": 200}}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    let mut client = connect(listen).await;
    let (_, ended) = read_to_close(&mut client).await;
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert_reset(ended);
    lab.stop().await;
}

/// A reset is what Linux reports for an RST; elsewhere an end of stream is accepted.
fn assert_reset(ended: Option<io::ErrorKind>) {
    if cfg!(target_os = "linux") {
        assert_eq!(ended, Some(io::ErrorKind::ConnectionReset));
    } else {
        assert!(
            matches!(ended, None | Some(io::ErrorKind::ConnectionReset)),
            "{ended:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slicer_delivers_everything_in_order_in_pieces() {
    let lab = Lab::start().await;
    let listen = lab.proxy("sliced").await;
    let mut client = connect(listen).await;
    round_trip(&mut client, b"warm up").await;
    let attributes = json!({"average_size": 8, "size_variation": 4, "delay": 2000});
    lab.toxic(
        "sliced",
        json!({"type": "slicer", "attributes": attributes}),
    )
    .await;
    let data = pattern(256);
    within("write", client.write_all(&data)).await.unwrap();
    let mut received = Vec::new();
    let mut reads = 0;
    let mut buf = [0; 1024];
    while received.len() < data.len() {
        let n = within("slice", client.read(&mut buf)).await.unwrap();
        assert_ne!(n, 0, "closed after {} bytes", received.len());
        received.extend_from_slice(&buf[..n]);
        reads += 1;
    }
    assert_eq!(received, data);
    assert!(reads >= 2, "256 bytes arrived in {reads} read(s)");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_data_closes_after_the_limit() {
    let lab = Lab::start().await;
    let listen = lab.proxy("limited").await;
    lab.toxic(
        "limited",
        json!({"type": "limit_data", "attributes": {"bytes": 10}}),
    )
    .await;
    let mut client = connect(listen).await;
    let data = pattern(32);
    within("write", client.write_all(&data)).await.unwrap();
    let (received, ended) = read_to_close(&mut client).await;
    assert_eq!(received, &data[..10]);
    assert!(
        matches!(ended, None | Some(io::ErrorKind::ConnectionReset)),
        "{ended:?}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_close_delays_the_close() {
    let lab = Lab::start().await;
    let listen = lab.proxy("lingering").await;
    lab.toxic(
        "lingering",
        json!({"type": "slow_close", "attributes": {"delay": 300}}),
    )
    .await;
    let mut client = connect(listen).await;
    round_trip(&mut client, b"bye").await;
    let start = Instant::now();
    within("shutdown", client.shutdown()).await.unwrap();
    let (received, ended) = read_to_close(&mut client).await;
    assert!(received.is_empty());
    assert_eq!(ended, None);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_cuts_connections_and_refuses_new_ones_until_enabled() {
    let lab = Lab::start().await;
    let listen = lab.proxy("node").await;
    let mut client = connect(listen).await;
    round_trip(&mut client, b"up").await;

    let down = lab.post("/proxies/node", &json!({"enabled": false})).await;
    assert_eq!(down.status, 200, "{}", down.body);
    assert_eq!(down.body["enabled"], false);
    read_to_close(&mut client).await;
    let refused = within("connect while down", TcpStream::connect(listen)).await;
    assert!(refused.is_err(), "a disabled proxy accepted a connection");

    let up = lab.post("/proxies/node", &json!({"enabled": true})).await;
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(up.body["enabled"], true);
    assert_eq!(up.body["listen"], listen.to_string());
    round_trip(&mut connect(listen).await, b"up again").await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_removes_toxics_and_enables_proxies() {
    let lab = Lab::start().await;
    let listen = lab.proxy("messy").await;
    lab.toxic(
        "messy",
        json!({"type": "timeout", "attributes": {"timeout": 0}}),
    )
    .await;
    let down = lab.post("/proxies/messy", &json!({"enabled": false})).await;
    assert_eq!(down.status, 200, "{}", down.body);

    assert_eq!(lab.post("/reset", &json!({})).await.status, 204);
    let proxy = lab.get("/proxies/messy").await.body;
    assert_eq!(proxy["enabled"], true);
    assert_eq!(proxy["toxics"], json!([]));
    round_trip(&mut connect(listen).await, b"clean").await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_listen_on_loopback_unless_the_api_allows_any_address() {
    let lab = Lab::start().await;
    let upstream = lab.echo.addr.to_string();
    for (body, path) in [
        (
            json!({"name": "open", "listen": "0.0.0.0:0", "upstream": upstream}),
            "/proxies",
        ),
        (
            json!({"name": "lan", "listen": "10.1.2.3:0", "upstream": upstream}),
            "/proxies",
        ),
    ] {
        let refused = lab.post(path, &body).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(
            refused.body["error"]
                .as_str()
                .unwrap()
                .contains("--allow-public-listen"),
            "{}",
            refused.body
        );
    }
    // Nor can a proxy on loopback be moved onto every address.
    lab.proxy("p").await;
    let moved = lab
        .post("/proxies/p", &json!({"listen": "0.0.0.0:0"}))
        .await;
    assert_eq!(moved.status, 403, "{}", moved.body);
    assert_eq!(lab.get("/proxies").await.body.as_object().unwrap().len(), 1);

    // With the policy that allows it, the same request opens the proxy.
    let chaos = Chaos::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(serve(
        listener,
        chaos.clone(),
        ListenPolicy::Any,
        shutdown.clone(),
    ));
    let answer = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{base}/proxies"))
        .json(&json!({"name": "open", "listen": "0.0.0.0:0", "upstream": upstream}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    shutdown.cancel();
    serving.await.unwrap().unwrap();
    chaos.shutdown().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_or_a_foreign_page_is_refused_before_the_api() {
    let lab = Lab::start().await;
    let body = r#"{"name": "p", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"}"#;
    let plain = lab.post_typed("/proxies", "text/plain", body).await;
    assert_eq!(plain.status, 415, "{}", plain.body);
    let form = lab
        .post_typed("/proxies", "application/x-www-form-urlencoded", body)
        .await;
    assert_eq!(form.status, 415, "{}", form.body);
    assert_eq!(lab.get("/proxies").await.body, json!({}));
    // The same body as JSON is served.
    assert_eq!(lab.post_raw("/proxies", body).await.status, 201);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_forgets_a_quiet_connection_and_tells_neither_side() {
    let lab = Lab::start().await;
    let listen = lab.proxy("p").await;
    // On one stream: the clock is the connection's, data either way resets it.
    lab.toxic(
        "p",
        json!({"type": "idle_timeout", "stream": "upstream", "attributes": {"timeout": 300}}),
    )
    .await;
    let mut client = connect(listen).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(700) {
        round_trip(&mut client, b"still here").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Quiet for longer than the timeout: forgotten. What is sent goes nowhere,
    // and no end (FIN or RST) comes back either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.write_all(b"anyone there?").await.unwrap();
    let mut buf = [0u8; 64];
    let answer = tokio::time::timeout(Duration::from_millis(800), client.read(&mut buf)).await;
    assert!(answer.is_err(), "nothing comes back: {answer:?}");
    // A new connection passes until it too is quiet for long enough.
    round_trip(&mut connect(listen).await, b"a fresh mapping").await;
    lab.stop().await;
}
