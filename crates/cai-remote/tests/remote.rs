//! Integration tests of cai-remote against cai-server's router served in-process on
//! 127.0.0.1: the remote backend answers as the local model does, spreads work over several
//! endpoints, and survives an endpoint that dies mid-run.

#[path = "remote/common.rs"]
mod common;

#[path = "remote/equivalence.rs"]
mod equivalence;

#[path = "remote/endpoints.rs"]
mod endpoints;

#[path = "remote/failures.rs"]
mod failures;
