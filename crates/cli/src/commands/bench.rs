//! `octopoll bench`: measures and prints the figures of `docs/BENCHMARKS.md`,
//! as a Markdown table (and JSON with `--json`), each beside its baseline or goal.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use octopoll_bench::handshake::{self, key_type_label, HandshakeBench, HandshakeFigures};
use octopoll_bench::runs;
use octopoll_pki::KeyType;
use serde::Serialize;

use crate::args::{BenchArgs, BenchWhat};

/// Everything one invocation measured.
#[derive(Debug, Default, Serialize)]
struct Figures {
    handshake: Option<HandshakeFigures>,
    mesh: Option<runs::MeshFigures>,
    dispatch: Option<runs::DispatchFigures>,
    storm: Option<runs::StormFigures>,
    queue: Option<runs::QueueFigures>,
    redis_faults: Option<runs::RedisFaultFigures>,
}

/// Runs the benchmarks asked for and prints their table.
pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let key_type: KeyType = args.key_type.into();
    let label = key_type_label(key_type);
    let scenario_key = match key_type {
        KeyType::Rsa2048 => "rsa",
        _ => "ecdsa",
    };
    let mut figures = Figures::default();
    let wants = |what: BenchWhat| args.what == what || args.what == BenchWhat::All;
    // The handshake rate first: the mesh's bound is drawn from it.
    if wants(BenchWhat::Handshake) || wants(BenchWhat::Mesh) {
        eprintln!(
            "measuring handshakes ({label}, {} clients)…",
            args.concurrency
        );
        figures.handshake = Some(
            handshake::run(HandshakeBench {
                key_type,
                concurrency: args.concurrency,
                round: Duration::from_secs(3),
                rounds: 5,
            })
            .await
            .context("the handshake benchmark")?,
        );
    }
    if wants(BenchWhat::Mesh) {
        eprintln!(
            "measuring the full mesh of {} agents × 3 nodes…",
            args.agents
        );
        figures.mesh = Some(runs::mesh(args.agents, scenario_key).await?);
    }
    if wants(BenchWhat::Dispatch) {
        eprintln!("measuring dispatch at {} requests/s…", args.rate);
        figures.dispatch = Some(runs::dispatch(args.agents, args.rate, scenario_key).await?);
    }
    if wants(BenchWhat::Storm) {
        eprintln!("measuring a restart storm of {} agents…", args.agents);
        figures.storm = Some(runs::storm(args.agents, scenario_key).await?);
    }
    if wants(BenchWhat::Queue) {
        eprintln!(
            "measuring dispatch at {} requests/s through per-node queues, then the Redis queue…",
            args.rate
        );
        figures.queue = Some(runs::queues(args.agents, args.rate, scenario_key).await?);
    }
    if wants(BenchWhat::RedisFaults) {
        eprintln!(
            "measuring a node killed under {} agents (per-node queues, then the Redis queue), then Redis down {} s with and without the drop delay…",
            args.agents,
            runs::OUTAGE_S
        );
        figures.redis_faults =
            Some(runs::redis_faults(args.agents, args.rate, scenario_key).await?);
    }
    print!("{}", table(&figures, label));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Per-node beside Redis latencies, and their ratios.
fn versus(per_node: &runs::Pickup, redis: &runs::Pickup) -> String {
    let ratio = |x: f64, y: f64| if x > 0.0 { y / x } else { f64::NAN };
    format!(
        "per-node p50 {:.2} / p99 {:.2} ms; Redis p50 {:.2} / p99 {:.2} ms; Redis ÷ per-node p50 {:.1}×, p99 {:.1}×",
        per_node.p50,
        per_node.p99,
        redis.p50,
        redis.p99,
        ratio(per_node.p50, redis.p50),
        ratio(per_node.p99, redis.p99),
    )
}

fn table(figures: &Figures, key_type: &str) -> String {
    let mut out = String::new();
    let kx = figures
        .handshake
        .as_ref()
        .map_or("X25519".to_string(), |h| {
            format!("{} {}", h.key_exchange, h.protocol)
        });
    let _ = writeln!(
        out,
        "| figure | key type, key exchange | measured | baseline / goal | verdict |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    if let Some(h) = &figures.handshake {
        let _ = writeln!(
            out,
            "| handshake rate: identified polling connections/s ({} clients) | {key_type}, {kx} | {:.0}/s | bare rustls {:.0}/s; ratio {:.2} (goal ≥ 0.80) | {} |",
            h.concurrency,
            h.octopoll_per_s,
            h.bare_per_s,
            h.ratio,
            verdict(h.ratio >= 0.8)
        );
    }
    if let Some(m) = &figures.mesh {
        let bound = figures
            .handshake
            .as_ref()
            .map(|h| 2.0 * m.connections as f64 / h.bare_per_s);
        let measured = m.full_mesh_ms.map(|ms| ms as f64 / 1000.0);
        let _ = writeln!(
            out,
            "| full mesh from cold: {} agents × 3 nodes = {} connections, {} processes | {key_type}, {kx} | {} | ≤ 2 × connections ÷ bare rate = {} | {} |",
            m.agents,
            m.connections,
            m.processes,
            measured.map_or("never".into(), |s| format!("{s:.1} s")),
            bound.map_or("?".into(), |b| format!("{b:.1} s")),
            verdict(matches!((measured, bound), (Some(s), Some(b)) if s <= b))
        );
        if let Some(kib) = m.rss_per_connection_kib {
            let _ = writeln!(
                out,
                "| memory per held connection, both ends, at {} connections | {key_type}, {kx} | {kib:.1} KiB | ≤ 24 KiB | {} |",
                m.connections,
                verdict(kib <= 24.0)
            );
        }
    }
    if let Some(d) = &figures.dispatch {
        let (p, s) = (&d.pickup_ms, &d.pickup_from_schedule_ms);
        let _ = writeln!(
            out,
            "| dispatch: pickup at {:.0} requests/s over {} agents ({} requests, {} failed) | {key_type}, {kx} | p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms; from schedule (coordinated omission) p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms | p99 ≤ 5 ms | {} |",
            d.rate,
            d.agents,
            d.requests,
            d.failed,
            p.p50,
            p.p99,
            p.p999,
            s.p50,
            s.p99,
            s.p999,
            verdict(s.p99 <= 5.0 && d.failed == 0)
        );
    }
    if let Some(q) = &figures.queue {
        let _ = writeln!(
            out,
            "| queues: pickup at {:.0} requests/s over {} agents, per-node vs Redis ({} / {} requests, {} / {} failed) | {key_type}, {kx} | {} | — (measured) | — |",
            q.redis.rate,
            q.redis.agents,
            q.per_node.requests,
            q.redis.requests,
            q.per_node.failed,
            q.redis.failed,
            versus(&q.per_node.pickup_ms, &q.redis.pickup_ms),
        );
        let _ = writeln!(
            out,
            "| queues: end to end (queued → response), per-node vs Redis | {key_type}, {kx} | {} | — (measured) | — |",
            versus(&q.per_node.end_to_end_ms, &q.redis.end_to_end_ms),
        );
        let _ = writeln!(
            out,
            "| Redis commands per request (INFO commandstats over the Redis run) | — | {:.1} | the flow's minimum {} | {} |",
            q.redis_commands_per_request,
            q.minimum_commands_per_request,
            verdict(q.redis_commands_per_request <= 2.0 * q.minimum_commands_per_request as f64)
        );
    }
    if let Some(r) = &figures.redis_faults {
        let secs = |s: Option<f64>| s.map_or("—".into(), |s| format!("{s:.1} s"));
        let failed = |f: &runs::FaultFigures| {
            let all: Vec<String> = f
                .failed_by_reason
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            if all.is_empty() {
                "none failed".to_string()
            } else {
                all.join(", ")
            }
        };
        let (p, q) = (&r.kill_per_node, &r.kill_redis);
        let _ = writeln!(
            out,
            "| node 2 killed at {:.0} requests/s over {} agents: until every request in flight at the kill ended | {key_type}, {kx} | per-node queues {} ({}; lost {}); Redis queue {} ({}; lost {}) | Redis: Halibut's 60 s of processor silence; lost 0 | {} |",
            r.rate,
            r.agents,
            secs(p.in_flight_ended_s),
            failed(p),
            p.lost,
            secs(q.in_flight_ended_s),
            failed(q),
            q.lost,
            verdict(p.lost == 0 && q.lost == 0)
        );
        let (d, n) = (&r.outage_with_delay, &r.outage_without_delay);
        let ratio = if d.peak_handshakes_per_s > 0 {
            n.peak_handshakes_per_s as f64 / d.peak_handshakes_per_s as f64
        } else {
            f64::NAN
        };
        let _ = writeln!(
            out,
            "| Redis down {} s under {} agents: peak handshakes/s as connections are dropped | {key_type}, {kx} | random 0–30 s drop delay {}/s, full mesh {} after ({}; lost {}); no delay {}/s, full mesh {} after ({}; lost {}); no delay ÷ delay {ratio:.1}× | lost 0 | {} |",
            r.outage_s,
            r.agents,
            d.peak_handshakes_per_s,
            secs(d.full_mesh_s),
            failed(d),
            d.lost,
            n.peak_handshakes_per_s,
            secs(n.full_mesh_s),
            failed(n),
            n.lost,
            verdict(d.lost == 0 && n.lost == 0)
        );
    }
    if let Some(st) = &figures.storm {
        let secs = |s: Option<f64>| s.map_or("never".into(), |s| format!("{s:.1} s"));
        let _ = writeln!(
            out,
            "| restart storm: all 3 nodes restarted under {} agents, Halibut backoff 5 s–2 min | {key_type}, {kx} | full mesh again {} (99 % {}); peak node CPU {:.0} % of a core; {} handshakes; {} failed | — (measured) | — |",
            st.agents,
            secs(st.full_mesh_s),
            secs(st.mesh_99_s),
            st.peak_node_cpu_percent,
            st.handshakes,
            st.failed
        );
    }
    out
}
