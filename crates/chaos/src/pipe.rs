//! One direction of a proxied connection: a reader that timestamps chunks into a
//! bounded channel, and a writer that passes them through the direction's toxics.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use crate::gate::{Action, Activity, Chunk, Fatal, Gates, Head, Plan, ToxicEntry};
use crate::toxic::Stream;

/// Largest chunk read at once.
pub(crate) const CHUNK_BYTES: usize = 32 * 1024;

/// Chunks read ahead of the writer (what lets latency keep throughput).
const CHANNEL_CHUNKS: usize = 64;

/// How a direction, and so perhaps the connection, ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The source ended and the destination's write half was shut down.
    Eof,
    /// A `timeout` toxic expired: close both sides.
    TimedOut,
    /// A `reset_peer` toxic fired: reset both sides.
    Reset,
    /// A `limit_data` toxic was used up: close both sides.
    Limit,
    /// The proxy was disabled, changed or deleted.
    Cut,
    /// An `idle_timeout` forgot the connection and the source then ended: the
    /// destination was not told.
    Vanished,
    /// Writing to the destination failed.
    WriteFailed(io::Error),
}

/// Copies `src` to `dst` through the `stream` toxics until either ends;
/// `activity` is the connection's traffic, shared with the other direction.
pub(crate) async fn direction(
    src: &mut OwnedReadHalf,
    dst: &mut OwnedWriteHalf,
    toxics: watch::Receiver<Vec<ToxicEntry>>,
    stream: Stream,
    activity: Arc<Activity>,
) -> End {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let mut writer = std::pin::pin!(write_loop(rx, dst, toxics, stream, activity));
    let early = tokio::select! {
        end = &mut writer => Some(end),
        () = read_loop(src, tx) => None,
    };
    match early {
        Some(end) => end,
        // The reader is done and has dropped its sender: the writer drains and ends.
        None => writer.await,
    }
}

/// Reads chunks until end of stream, an error, or the writer going away.
async fn read_loop(src: &mut OwnedReadHalf, tx: mpsc::Sender<Chunk>) {
    let mut buf = BytesMut::with_capacity(CHUNK_BYTES);
    loop {
        buf.reserve(CHUNK_BYTES);
        match src.read_buf(&mut buf).await {
            Ok(0) => return,
            Ok(_) => {
                let chunk = Chunk {
                    data: buf.split().freeze(),
                    arrived: Instant::now(),
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "read failed; treating as end of stream");
                return;
            }
        }
    }
}

/// One turn of the writer's loop.
enum Step {
    Changed,
    Recheck,
    Unwatched,
    Fatal,
    Received(Option<Chunk>),
    Wrote(io::Result<usize>),
    Finish,
    Stuck,
}

/// Writes chunks to `dst` as the current toxics allow, reacting to toxic changes at
/// once, whether or not data flows.
async fn write_loop(
    mut rx: mpsc::Receiver<Chunk>,
    dst: &mut OwnedWriteHalf,
    mut toxics: watch::Receiver<Vec<ToxicEntry>>,
    stream: Stream,
    activity: Arc<Activity>,
) -> End {
    let mut gates = Gates::new(stream, activity.clone());
    gates.refresh(&toxics.borrow_and_update(), Instant::now());
    let mut watching = true;
    let mut head: Option<Head> = None;
    let mut eof_at: Option<Instant> = None;
    loop {
        if watching {
            match toxics.has_changed() {
                Ok(true) => {
                    let now = Instant::now();
                    gates.refresh(&toxics.borrow_and_update(), now);
                }
                Ok(false) => {}
                Err(_) => watching = false,
            }
        }
        let Plan {
            fatal,
            action,
            recheck,
        } = gates.plan(head.as_mut(), eof_at);
        let fatal_at = fatal.map(|(at, _)| at);
        let mut receive = false;
        let mut write_at = None;
        let mut piece = Bytes::new();
        let mut finish_at = None;
        match action {
            Action::Hold => {}
            Action::Receive => receive = true,
            Action::Write { at, data } => {
                write_at = Some(at);
                piece = data;
            }
            Action::Finish { at } => finish_at = Some(at),
            Action::LimitReached => return End::Limit,
            Action::Swallow => {
                head = None;
                receive = true;
            }
            Action::Vanish => return End::Vanished,
        }
        let now = Instant::now();
        let step = tokio::select! {
            biased;
            changed = toxics.changed(), if watching => match changed {
                Ok(()) => Step::Changed,
                Err(_) => Step::Unwatched,
            },
            () = sleep_until(fatal_at.unwrap_or(now)), if fatal_at.is_some() => Step::Fatal,
            chunk = rx.recv(), if receive => Step::Received(chunk),
            written = write_when(dst, write_at.unwrap_or(now), &piece), if write_at.is_some() => {
                Step::Wrote(written)
            }
            () = sleep_until(finish_at.unwrap_or(now)), if finish_at.is_some() => Step::Finish,
            () = sleep_until(recheck.unwrap_or(now)), if recheck.is_some() => Step::Recheck,
            else => Step::Stuck,
        };
        match step {
            Step::Changed => {
                let now = Instant::now();
                gates.refresh(&toxics.borrow_and_update(), now);
            }
            Step::Unwatched => watching = false,
            Step::Recheck => {}
            Step::Fatal => {
                return match fatal {
                    Some((_, Fatal::Reset)) => End::Reset,
                    _ => End::TimedOut,
                }
            }
            Step::Received(Some(chunk)) => {
                activity.touch(chunk.arrived);
                // Forgotten: what arrives is dropped, as a gateway drops it.
                if !activity.is_forgotten() {
                    head = Some(Head::new(chunk, Instant::now()));
                }
            }
            Step::Received(None) => eof_at = Some(Instant::now()),
            Step::Wrote(Ok(0)) => return End::WriteFailed(io::ErrorKind::WriteZero.into()),
            Step::Wrote(Ok(n)) => {
                if let Some(current) = head.as_mut() {
                    gates.wrote(current, n, Instant::now());
                    if current.is_done() {
                        head = None;
                    }
                }
            }
            Step::Wrote(Err(error)) => return End::WriteFailed(error),
            Step::Finish => {
                if let Err(error) = dst.shutdown().await {
                    tracing::debug!(%error, "shutting down the write half failed");
                }
                return End::Eof;
            }
            // Held with no toxic left to release it: the proxy is gone.
            Step::Stuck => return End::Cut,
        }
    }
}

/// Writes what it can of `data` once `at` has come; cancel-safe.
async fn write_when(dst: &mut OwnedWriteHalf, at: Instant, data: &[u8]) -> io::Result<usize> {
    sleep_until(at).await;
    dst.write(data).await
}
