//! Latchkey server: a personal access token server speaking Iggy's binary
//! protocol.
//!
//! A request's path, in four files: [`connection`] (bytes → frames → replies;
//! [`vsr`] for the 0.11 framing) → [`dispatch`] (what each command does;
//! reads from the registry without locks) → [`writer`] (the single mutation
//! path: check, make durable, publish to the readers) → [`registry`] (the
//! replicated data structure).
//! [`server`] wires it together; [`node`] is what connections share.

pub mod clock;
pub mod config;
pub mod connection;
pub mod datadir;
pub mod dispatch;
pub mod log;
pub mod node;
pub mod policy;
pub mod registry;
pub mod server;
pub mod throttle;
pub mod tls;
pub mod users;
pub mod vsr;
pub mod writer;
