//! The API key: with one set, every `/v1` path needs `Authorization: Bearer KEY`. `/health` and
//! unknown paths outside `/v1` stay open, as in vLLM, so probes work without the key.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Shared};

pub(crate) async fn require_key(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = &shared.api_key {
        let path = request.uri().path();
        let guarded = path == "/v1" || path.starts_with("/v1/");
        if guarded && !bearer_matches(request.headers(), key) {
            return ApiError::unauthorized(
                "missing or wrong API key: send `Authorization: Bearer <key>`",
            )
            .into_response();
        }
    }
    next.run(request).await
}

fn bearer_matches(headers: &HeaderMap, key: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.trim().splitn(2, ' ');
    let scheme = parts.next().unwrap_or("");
    let token = parts.next().unwrap_or("").trim();
    scheme.eq_ignore_ascii_case("bearer") && same_secret(token.as_bytes(), key.as_bytes())
}

/// Compares without stopping at the first differing byte, so response time says nothing about
/// how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_scheme_and_key() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(bearer_matches(&with("Bearer sk-1"), "sk-1"));
        assert!(bearer_matches(&with("bearer  sk-1 "), "sk-1"));
        assert!(!bearer_matches(&with("Bearer sk-2"), "sk-1"));
        assert!(!bearer_matches(&with("Basic sk-1"), "sk-1"));
        assert!(!bearer_matches(&with("Bearer"), "sk-1"));
        assert!(!bearer_matches(&HeaderMap::new(), "sk-1"));
    }
}
