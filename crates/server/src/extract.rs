//! Extractors that answer bad input with an `ApiError` (JSON body) instead
//! of axum's plain-text rejections.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = RawBody::from_request(req, state).await?;
        serde_json::from_slice(&body.0)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// A request body as bytes, within the broker's size limit.
#[derive(Debug)]
pub(crate) struct RawBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(body_error)
    }
}

fn body_error(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is larger than the broker's limit (weir broker --max-body)",
        )
    } else {
        ApiError::bad_request(r.body_text())
    }
}

/// Query parameters.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

/// A path parameter.
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r| ApiError::new(r.status(), r.body_text()))
    }
}

/// Query parameters read from the raw query string rather than through
/// serde, so that a name may repeat (`label=a:1&label=b:2`), a name the
/// route does not take is refused instead of ignored (a typo must not widen
/// a query), and an empty value (`metric=`) counts as absent.
pub(crate) trait FromParams: Sized {
    /// Every name the route takes.
    const NAMES: &'static [&'static str];

    fn from_params(params: &Params) -> Result<Self, ApiError>;
}

/// The parameters of a route that takes none.
#[derive(Debug)]
pub(crate) struct NoParams;

impl FromParams for NoParams {
    const NAMES: &'static [&'static str] = &[];

    fn from_params(_: &Params) -> Result<Self, ApiError> {
        Ok(NoParams)
    }
}

/// Query parameters as a route's [`FromParams`] type.
#[derive(Debug)]
pub(crate) struct ApiParams<T>(pub(crate) T);

impl<T: FromParams, S: Send + Sync> FromRequestParts<S> for ApiParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let params = Params::parse(parts.uri.query().unwrap_or_default(), T::NAMES)?;
        T::from_params(&params).map(ApiParams)
    }
}

/// A query string's name-value pairs, decoded, every name a known one,
/// empty values left out.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(query: &str, known: &[&str]) -> Result<Params, ApiError> {
        let mut pairs = Vec::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if !known.contains(&name.as_ref()) {
                let takes = if known.is_empty() {
                    "this route takes none".to_string()
                } else {
                    format!("this route takes {}", known.join(", "))
                };
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {name:?}: {takes}"
                )));
            }
            if !value.is_empty() {
                pairs.push((name.into_owned(), value.into_owned()));
            }
        }
        Ok(Params(pairs))
    }

    /// Every value given for `name`, in order.
    pub(crate) fn all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a parameter that may be given once.
    pub(crate) fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.all(name).count() {
            0 => Ok(None),
            1 => Ok(self.all(name).next()),
            n => Err(ApiError::bad_request(format!(
                "{name}: expected once, given {n} times"
            ))),
        }
    }

    /// The value of a parameter that may be given once, through `parse`;
    /// when `parse` refuses it, a 400 saying what was `expected`.
    pub(crate) fn parsed<T>(
        &self,
        name: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        let Some(value) = self.one(name)? else {
            return Ok(None);
        };
        match parse(value) {
            Some(v) => Ok(Some(v)),
            None => Err(ApiError::bad_request(format!(
                "{name}: expected {expected}, not {value:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_repeat_and_refuse_unknown_names() {
        let known = ["metric", "label", "limit"];
        let p = Params::parse("metric=&label=a%3A1&label=b:two+words&&limit=5", &known).unwrap();
        assert_eq!(p.one("metric").unwrap(), None, "empty is absent");
        assert_eq!(p.all("label").collect::<Vec<_>>(), ["a:1", "b:two words"]);
        assert_eq!(p.one("limit").unwrap(), Some("5"));
        let e = p.one("label").unwrap_err();
        assert_eq!(e.detail, "label: expected once, given 2 times");
        let e = p
            .parsed("limit", "an even number", |v| {
                v.parse::<u32>().ok().filter(|n| n % 2 == 0)
            })
            .unwrap_err();
        assert_eq!(e.detail, r#"limit: expected an even number, not "5""#);

        let e = Params::parse("limt=5", &known).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.detail,
            r#"unknown parameter "limt": this route takes metric, label, limit"#
        );
        let e = Params::parse("x", &[]).unwrap_err();
        assert_eq!(e.detail, r#"unknown parameter "x": this route takes none"#);
        assert!(Params::parse("", &[]).is_ok());
    }
}
