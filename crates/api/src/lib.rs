//! Weir's queue HTTP API from both sides: the JSON bodies ([`wire`]) that
//! `weir-server` answers with, and [`Client`], the Rust client that the
//! `http://` bus backend and the `weir` CLI use.
//!
//! Invariants: the wire types are the API's only definition, so server and
//! client cannot drift; OpenAPI schemas are derived from them. Payload bytes
//! survive a round trip exactly (see [`wire::encode_payload`]).

mod client;
mod sse;
pub mod wire;

pub use client::{
    CONNECT_TIMEOUT, Client, ClientError, REQUEST_TIMEOUT, SettleKind, Start, SubscribeParams,
};
pub use sse::{DEFAULT_MAX_EVENT_BYTES, EventStream, SseEvent, SseParser};
