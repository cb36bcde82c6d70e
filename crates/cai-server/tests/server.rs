//! Integration tests of cai-server: the router served in-process on 127.0.0.1 over a tiny
//! model made in a temp directory, driven by a plain HTTP client. Each module under
//! `tests/server/` owns one concern; `common` holds the shared helpers.

#[path = "server/common.rs"]
mod common;

#[path = "server/errors.rs"]
mod errors;

#[path = "server/completions.rs"]
mod completions;

#[path = "server/chat.rs"]
mod chat;

#[path = "server/batching.rs"]
mod batching;

#[path = "server/limits.rs"]
mod limits;
