//! Latchkey server: a personal access token server speaking Iggy's binary
//! protocol.
//!
//! The layers, each using only the ones below it:
//!
//! ```text
//! server/   start → serve → shutdown; background tasks
//! offline/  tools run instead of the server (export, import)
//! net/      listener, admission, one connection loop for both framings, TLS
//! http/     the HTTP listener: metrics, probes, REST, forward auth
//! command/  sessions, permission checks, what each command does
//! auth/     users, passwords, throttle, policy, server key
//! store/    the writer (group commit, the rules) and the token log file
//! registry/ the replicated token map, read without locks
//! metrics/  Prometheus counters per thread, summed at scrape (any layer records)
//! config, datadir, clock
//! ```
//!
//! A token login, from socket bytes and back: `net/connection.rs` reads
//! and decodes the frame (with the protocol crate) → `command/mod.rs`
//! routes it and checks the session → `command/login.rs` checks the
//! throttle (`auth/throttle.rs`), hashes the token (`auth/mod.rs`) and looks
//! it up in `registry/mod.rs` → the reply goes out in
//! `net/connection.rs`'s burst write.
//!
//! A token create: `net/connection.rs` → `command/mod.rs` (session, route)
//! → `command/write.rs` (checks, mint, queue the change) →
//! `store/writer.rs` (the rules, group commit) → `store/log.rs` (encode,
//! write, fsync) → `registry/mod.rs` (published to every reader) → the
//! reply, in request order, from `net/connection.rs`.
//!
//! ARCHITECTURE.md at the repository root draws the same map with the
//! invariants each part keeps.

pub mod auth;
pub mod clock;
pub mod command;
pub mod config;
pub mod datadir;
pub mod http;
pub mod metrics;
pub mod net;
pub mod offline;
pub mod registry;
pub mod server;
pub mod store;
