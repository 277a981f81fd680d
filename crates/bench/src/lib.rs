//! `octopoll bench`: the figures `docs/BENCHMARKS.md` records, measured on this
//! machine in one invocation and printed beside the baselines they are judged
//! against, as ratios where there is one (the machine is shared and noisy, and a
//! ratio taken in one run survives that better than a rate).
//!
//! * [`handshake`]: polling connections a second vs bare rustls;
//! * [`runs`]: full mesh, memory per connection, dispatch latency, restart storm.

pub mod handshake;
pub mod runs;
