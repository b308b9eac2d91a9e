//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.
//! Clients (the openai SDKs, LangChain, curl scripts) read `message` and branch on `code`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One failed request: the status and the body's four fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    /// 400: a field has the wrong type or value; `param` names it (`messages[1].content`).
    pub fn bad_field(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        e.param = Some(param.into());
        e
    }

    /// 400: the body is not a JSON object.
    pub fn bad_json(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        e.code = Some("invalid_json");
        e
    }

    /// 400: the prompt leaves no room to generate in.
    pub fn context_exceeded(param: &str, prompt: usize, context: usize) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!(
                "this model's maximum context length is {context} tokens, and the prompt has \
                 {prompt} tokens, which leaves no room for a completion"
            ),
        );
        e.param = Some(param.into());
        e.code = Some("context_length_exceeded");
        e
    }

    /// 413: the body is larger than the server reads.
    pub fn too_large(limit: usize) -> Self {
        let mut e = Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than {limit} bytes"),
        );
        e.code = Some("request_too_large");
        e
    }

    /// 401: missing or wrong bearer token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message);
        e.code = Some("invalid_api_key");
        e
    }

    /// 404: a model name other than the one served.
    pub fn model_not_found(asked: &str, served: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("the model `{asked}` does not exist; this server serves `{served}`"),
        );
        e.param = Some("model".into());
        e.code = Some("model_not_found");
        e
    }

    /// 404: no such endpoint.
    pub fn unknown_path(method: &str, path: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("unknown endpoint: {method} {path}"),
        );
        e.code = Some("unknown_url");
        e
    }

    /// 405: a known path with the wrong method.
    pub fn wrong_method(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("{method} is not allowed on {path}"),
        )
    }

    /// 503: the queue is full; clients retry after the `Retry-After` second.
    pub fn busy(max_queue: usize) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            format!("the server already has {max_queue} requests waiting or running; retry later"),
        );
        e.code = Some("server_busy");
        e
    }

    /// 503: the engine is gone (it will not come back; no Retry-After).
    pub fn engine_stopped(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message);
        e.code = Some("engine_stopped");
        e
    }

    /// 500: the engine failed on this request; its one-line message.
    pub fn engine_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// 500: the prompt could not be rendered or tokenised (a template error, say).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The `{"error": {...}}` body (also sent as an SSE chunk when a stream breaks off).
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE && self.code == Some("server_busy") {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
