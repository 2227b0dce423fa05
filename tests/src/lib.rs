//! Test support for CCO: a mock upstream of the Anthropic and OpenAI APIs, a raw HTTP/1.1
//! client, builders for Anthropic and OpenAI response bodies, a harness that runs the real
//! `ccod` and `ccoctl`, and a release server for the updater.

pub mod anthropic;
pub mod client;
pub mod ctl;
pub mod daemon;
pub mod mock;
pub mod openai;
pub mod release_server;
mod wire;

pub use client as http;
pub use mock::{
    split_at_offsets, split_every, MockUpstream, MockUpstreamBuilder, RecordedRequest, Reply,
};
