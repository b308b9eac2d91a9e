//! Server-sent events: `data: {json}\n\n` per chunk and `data: [DONE]\n\n` at the end. The
//! stream owns the [`Running`] request, so when the client goes away and the server drops the
//! body, the request's guards cancel the generation and free its queue place.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use futures_util::stream;
use serde_json::Value;

use super::job::Running;
use super::ApiError;
use crate::backend::Progress;

/// What one engine event becomes on the wire.
pub(crate) enum Flow {
    /// Chunks to send; more events follow.
    More(Vec<Value>),
    /// The last chunks; `[DONE]` follows them.
    End(Vec<Value>),
}

/// Turns a request's events into chunks (one per endpoint).
pub(crate) trait ChunkWriter: Send + 'static {
    fn on_progress(&mut self, progress: Progress) -> Flow;
}

/// The error chunk sent when a stream breaks off after it started.
pub(crate) fn error_chunk(message: String) -> Value {
    ApiError::engine_failed(message).body()
}

pub(crate) fn data(chunk: &Value) -> Bytes {
    Bytes::from(format!("data: {chunk}\n\n"))
}

const DONE: &[u8] = b"data: [DONE]\n\n";

struct Pump<W> {
    running: Running,
    writer: W,
    /// The event already received (the first one, read before answering).
    first: Option<Progress>,
    queued: std::collections::VecDeque<Bytes>,
    ended: bool,
}

/// A 200 `text/event-stream` response fed by `running`, starting with `first`.
pub(crate) fn response<W: ChunkWriter>(running: Running, first: Progress, writer: W) -> Response {
    let pump = Pump {
        running,
        writer,
        first: Some(first),
        queued: Default::default(),
        ended: false,
    };
    let chunks = stream::unfold(pump, |mut p| async move {
        loop {
            if let Some(bytes) = p.queued.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(bytes), p));
            }
            if p.ended {
                return None;
            }
            let event = match p.first.take() {
                Some(e) => e,
                None => p.running.next().await,
            };
            let (chunks, last) = match p.writer.on_progress(event) {
                Flow::More(c) => (c, false),
                Flow::End(c) => (c, true),
            };
            p.queued.extend(chunks.iter().map(data));
            if last {
                p.queued.push_back(Bytes::from_static(DONE));
                p.ended = true;
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies (nginx) would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
