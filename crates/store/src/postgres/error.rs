//! PostgreSQL failures as [`StoreError`]s: retryable ([`StoreError::Unavailable`])
//! when the same write may work later — the connection, the server's
//! resources, a conflict with another transaction — and
//! [`StoreError::Fatal`] otherwise. Messages name what failed; URLs in them
//! carry no password.

use std::fmt::Display;

use deadpool_postgres::{PoolError, TimeoutType};
use tokio_postgres::error::SqlState;

use crate::{Result, StoreError};

/// Classifies a tokio-postgres error. The message is the error with its
/// causes (for a server error: severity, SQLSTATE, message, detail, hint).
pub(crate) fn classify(e: tokio_postgres::Error) -> StoreError {
    let text = describe(&e);
    if is_transient(&e) {
        StoreError::Unavailable(text)
    } else {
        StoreError::Fatal(text)
    }
}

/// Classifies a failure to get a pooled connection.
pub(crate) fn classify_pool(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => classify(e),
        PoolError::Timeout(TimeoutType::Wait) => {
            StoreError::Unavailable("timed out waiting for a free connection".into())
        }
        PoolError::Timeout(TimeoutType::Create) => {
            StoreError::Unavailable("timed out connecting".into())
        }
        PoolError::Timeout(TimeoutType::Recycle) => {
            StoreError::Unavailable("timed out checking a pooled connection".into())
        }
        PoolError::Closed => StoreError::Closed("the PostgreSQL store is closed".into()),
        e @ (PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_)) => {
            StoreError::Fatal(e.to_string())
        }
    }
}

/// Whether a server error's SQLSTATE says the same request may work later:
/// class 08 (connection), 53 (insufficient resources: too many
/// connections, disk full, out of memory), serialization failures and
/// deadlocks, the server shutting down or starting, a lock not available,
/// a statement cancelled (by `statement_timeout` or an operator) and a
/// read-only transaction (a standby, as during a failover).
pub(crate) fn is_transient_code(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "55P03" | "57014" | "25006"
        )
}

fn is_transient(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        return is_transient_code(code);
    }
    // A closed connection, an IO error (connection refused or reset, a
    // connect timeout) or a timeout waiting for the server.
    e.is_closed()
        || causes(e).any(|c| c.is::<std::io::Error>())
        // tokio-postgres has no accessor for this kind; its text is stable.
        || e.to_string() == "timeout waiting for server"
}

fn causes(e: &tokio_postgres::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(e), |c| c.source())
}

/// An error and its causes in one line, or a server error as the server
/// reported it.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" (DETAIL: {detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!(" (HINT: {hint})"));
        }
        return text;
    }
    let mut text = e.to_string();
    for cause in causes(e) {
        text.push_str(": ");
        text.push_str(&cause.to_string());
    }
    text
}

/// The same error with `what` in front of its message.
pub(crate) fn context(e: StoreError, what: impl Display) -> StoreError {
    match e {
        StoreError::Url(m) => StoreError::Url(format!("{what}: {m}")),
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{what}: {m}")),
        StoreError::Invalid(m) => StoreError::Invalid(format!("{what}: {m}")),
        StoreError::Fatal(m) => StoreError::Fatal(format!("{what}: {m}")),
        StoreError::Unsupported(m) => StoreError::Unsupported(format!("{what}: {m}")),
        StoreError::Closed(m) => StoreError::Closed(format!("{what}: {m}")),
    }
}

/// Classifies an error and says what was being done.
pub(crate) trait Context<T> {
    fn context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| context(classify(e), what()))
    }
}

impl<T> Context<T> for Result<T, PoolError> {
    fn context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| context(classify_pool(e), what()))
    }
}

impl<T> Context<T> for Result<T, StoreError> {
    fn context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| context(e, what()))
    }
}

/// A libpq connection string fit for messages: the password left out of a
/// URL's user part, and masked where given as a `password=` parameter.
pub(crate) fn redact(url: &str) -> String {
    let url = match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                    format!("{scheme}://{user}@{host}{tail}")
                }
                None => format!("{scheme}://{rest}"),
            }
        }
        None => url.to_string(),
    };
    mask_password_parameters(&url)
}

/// `password=VALUE` → `password=***`, in a URL's query (`?…&password=…`)
/// or a key=value string (`host=h password='a b'`).
fn mask_password_parameters(text: &str) -> String {
    const KEY: &str = "password=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        let before = if at > 0 { &rest[..at] } else { out.as_str() };
        let starts_parameter = before
            .chars()
            .next_back()
            .is_none_or(|c| matches!(c, '?' | '&' | ' ' | '\t' | '\n'));
        let (before, after) = rest.split_at(at + KEY.len());
        out.push_str(before);
        if !starts_parameter {
            rest = after;
            continue;
        }
        out.push_str("***");
        let value_len = if let Some(quoted) = after.strip_prefix('\'') {
            // A quoted value ends at the first quote not escaped by '\'.
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map_or(after.len(), |(i, _)| i + 2)
        } else {
            after.find(['&', ' ', '\t', '\n']).unwrap_or(after.len())
        };
        rest = &after[value_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_the_retryable_ones() {
        let check = |code: &str, want: bool| {
            assert_eq!(
                is_transient_code(&SqlState::from_code(code)),
                want,
                "SQLSTATE {code}"
            );
        };
        check("08000", true); // connection_exception
        check("08006", true); // connection_failure
        check("08001", true); // sqlclient_unable_to_establish_sqlconnection
        check("40001", true); // serialization_failure
        check("40P01", true); // deadlock_detected
        check("53000", true); // insufficient_resources
        check("53100", true); // disk_full
        check("53200", true); // out_of_memory
        check("53300", true); // too_many_connections
        check("57P01", true); // admin_shutdown
        check("57P02", true); // crash_shutdown
        check("57P03", true); // cannot_connect_now
        check("55P03", true); // lock_not_available
        check("23505", false); // unique_violation
        check("23503", false); // foreign_key_violation
        check("22021", false); // character_not_in_repertoire (a NUL in text)
        check("22008", false); // datetime_field_overflow
        check("42P01", false); // undefined_table
        check("28P01", false); // invalid_password
        check("3D000", false); // invalid_catalog_name (no such database)
        check("57014", true); // query_canceled (statement_timeout)
        check("25006", true); // read_only_sql_transaction (a standby)
        check("40002", false); // integrity_constraint_violation in a transaction
        check("XX000", false); // internal_error
    }

    #[test]
    fn pool_failures_are_classified() {
        let check = |e: PoolError, retryable: bool, fragment: &str| {
            let e = classify_pool(e);
            assert_eq!(e.is_retryable(), retryable, "{e}");
            assert!(e.to_string().contains(fragment), "{e}");
        };
        check(
            PoolError::Timeout(TimeoutType::Wait),
            true,
            "free connection",
        );
        check(PoolError::Timeout(TimeoutType::Create), true, "connecting");
        check(PoolError::Timeout(TimeoutType::Recycle), true, "pooled");
        check(PoolError::Closed, false, "closed");
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = context(StoreError::Unavailable("reset".into()), "writing 3 samples");
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "writing 3 samples: reset");
        let e = context(StoreError::Fatal("bad".into()), "migrating");
        assert!(matches!(e, StoreError::Fatal(m) if m == "migrating: bad"));
    }

    #[test]
    fn redact_leaves_passwords_out() {
        let check = |url: &str, want: &str| assert_eq!(redact(url), want, "{url}");
        check(
            "postgres://weir:s3cret@db:5432/weir",
            "postgres://weir@db:5432/weir",
        );
        check("postgres://weir@db/weir", "postgres://weir@db/weir");
        check("postgresql://db", "postgresql://db");
        check(
            "postgres://weir:p%40ss@db/weir?sslmode=disable",
            "postgres://weir@db/weir?sslmode=disable",
        );
        check(
            "postgres://db/weir?user=weir&password=s3cret&sslmode=disable",
            "postgres://db/weir?user=weir&password=***&sslmode=disable",
        );
        check(
            "host=db user=weir password=s3cret dbname=weir",
            "host=db user=weir password=*** dbname=weir",
        );
        check(
            r"host=db password='it\'s secret' dbname=weir",
            "host=db password=*** dbname=weir",
        );
        check("password=s3cret", "password=***");
        check(
            "postgres://db/weir?application_name=nopassword=x",
            "postgres://db/weir?application_name=nopassword=x",
        );
    }
}
