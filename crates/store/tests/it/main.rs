//! The store's tests: one sink contract suite (`contract`) run against every
//! backend — SQLite, PostgreSQL (the real server `scripts/postgres` starts;
//! its URL in `WEIR_TEST_POSTGRES`) and CSV — and each backend's own cases.

mod contract;
mod csv;
mod postgres;
mod sqlite;
