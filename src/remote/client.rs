//! HTTP to an OpenAI-compatible server: the model list, and chat completions streamed line by
//! line. Blocking (the remote engine has its own thread); every failure becomes one line that
//! names the server and what went wrong.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::Value;

use super::wire;

/// What went wrong talking to the server, as the interface says it.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpError {
    /// Nothing answered (refused, unknown host, timed out, TLS).
    Unreachable(String),
    /// The server answered with an error status.
    Status {
        status: u16,
        message: String,
        /// `Retry-After` in seconds (429, 503).
        retry_after: Option<u64>,
    },
    /// The answer could not be read (not JSON where JSON was due).
    Malformed(String),
}

impl HttpError {
    /// One line for the user, with what to do where there is something to do.
    pub fn describe(&self, url: &str) -> String {
        match self {
            HttpError::Unreachable(why) => format!("cannot reach {url}: {why}"),
            HttpError::Status {
                status,
                message,
                retry_after,
            } => {
                let hint = match status {
                    401 | 403 => " (check the key: --api-key-env names the variable that holds it)",
                    404 => " (check the URL ends in /v1 and the model name: --remote-model)",
                    429 => " (rate limited)",
                    _ => "",
                };
                let wait = retry_after.map_or(String::new(), |s| format!("; retry after {s} s"));
                format!("{url} answered {status}: {message}{hint}{wait}")
            }
            HttpError::Malformed(why) => format!("{url} sent something unreadable: {why}"),
        }
    }
}

/// A connection's settings: where, and with which key.
#[derive(Clone)]
pub struct Client {
    base: String,
    key: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    pub fn new(base: &str, key: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // A 671B model's prefill of a long conversation can take a while before the first
            // byte; a reply streams for as long as it takes, so there is no body limit.
            .timeout_recv_response(Some(Duration::from_secs(600)))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            key,
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.key {
            Some(k) => req.header("Authorization", format!("Bearer {k}")),
            None => req,
        }
    }

    /// `GET /models`.
    pub fn models(&self) -> Result<Value, HttpError> {
        let resp = self
            .auth(self.agent.get(self.url("models")))
            .call()
            .map_err(unreachable)?;
        let resp = check(resp)?;
        read_json(resp)
    }

    /// `POST /chat/completions` with `body`; the response, once its status says it is a reply.
    pub fn chat(&self, body: &Value) -> Result<Response, HttpError> {
        let text = serde_json::to_string(body).expect("a JSON value serialises");
        let resp = self
            .auth(self.agent.post(self.url("chat/completions")))
            .header("Content-Type", "application/json")
            .header(
                "Accept",
                if body["stream"] == Value::Bool(true) {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .send(text)
            .map_err(unreachable)?;
        Ok(Response(check(resp)?))
    }
}

/// A successful reply, streamed or whole.
pub struct Response(ureq::http::Response<ureq::Body>);

impl Response {
    /// The body line by line (SSE), without line ends. The iterator ends at the end of the body;
    /// an error reading it (the connection dropped) comes as the last item.
    pub fn lines(self) -> impl Iterator<Item = Result<String, String>> {
        let reader = BufReader::new(self.0.into_body().into_reader());
        reader.lines().map(|l| l.map_err(|e| e.to_string()))
    }

    /// The whole body (a non-streamed reply; vLLM's routing can make it a few MB).
    pub fn text(self) -> Result<String, HttpError> {
        self.0
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(|e| HttpError::Unreachable(format!("the reply broke off: {e}")))
    }
}

fn unreachable(e: ureq::Error) -> HttpError {
    let why = match &e {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => io.to_string(),
        },
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        other => other.to_string(),
    };
    HttpError::Unreachable(why)
}

/// An error status becomes [`HttpError::Status`] with the server's own message.
fn check(
    resp: ureq::http::Response<ureq::Body>,
) -> Result<ureq::http::Response<ureq::Body>, HttpError> {
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = resp
        .into_body()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .unwrap_or_default();
    let message = wire::error_message(&body).unwrap_or_else(|| reason(status).to_string());
    Err(HttpError::Status {
        status,
        message,
        retry_after,
    })
}

fn read_json(resp: ureq::http::Response<ureq::Body>) -> Result<Value, HttpError> {
    let body = resp
        .into_body()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| HttpError::Unreachable(format!("the reply broke off: {e}")))?;
    serde_json::from_str(&body).map_err(|e| HttpError::Malformed(format!("not JSON ({e})")))
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        429 => "too many requests",
        500 => "internal server error",
        502 => "bad gateway",
        503 => "service unavailable",
        504 => "gateway timeout",
        _ => "error",
    }
}
