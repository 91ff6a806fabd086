//! weir-server's tests: handlers without sockets, then loopback HTTP.

mod fixture;
mod handlers;
mod loopback;
mod query;
