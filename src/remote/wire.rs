//! Chat-completion chunks and responses of OpenAI-compatible servers, decoded into plain
//! structs: text (reasoning and answer), log-probabilities, usage, llama.cpp's timings and
//! routed experts; plus the human message of error bodies.
//!
//! Servers differ in where they put things:
//! - reasoning text: `reasoning_content` (SGLang, llama.cpp, the DeepSeek API, thinkbench
//!   serve) or `reasoning` (vLLM >= 0.16, Ollama, OpenRouter). A server in transition may
//!   send both with the same text; `reasoning_content` is then taken and `reasoning` ignored.
//! - log-probabilities: `choices[0].logprobs.content[]`, each `{token, logprob, bytes,
//!   top_logprobs}`, with `id` from llama.cpp and thinkbench serve. "Impossible" arrives as
//!   -9999 (OpenAI, vLLM), as the lowest float, or as null; all become `f32::NEG_INFINITY`.
//! - routed experts:
//!   - SGLang: `sglext.routed_experts` at the response level (streamed: once, in a final
//!     chunk), base64 of little-endian int32, flattened `[tokens, layers, top_k]` (tokens =
//!     prompt tokens + generated tokens - 1). `sgl_ext`, and either name on `choices[0]`,
//!     are accepted too.
//!   - thinkbench serve: the same `sglext` plus `routed_weights` (base64 of little-endian
//!     f32, same layout) and `routed_experts_shape`; `sglext.choices` (every row with n > 1)
//!     is ignored: the top level holds the first row.
//!   - vLLM: `choices[0].routed_experts` in non-streamed responses, base64 of a `.npy` file
//!     (`[tokens, layers, top_k]`, dtype from its header); older builds sent a nested JSON
//!     integer array, accepted too.
//!
//!   A base64 table is read as `.npy` when it starts with numpy's magic and as raw int32
//!   otherwise, whichever field it came in.
//!
//! Parsing is tolerant: unknown fields are ignored; `choices` may be empty (the usage-only
//! final chunk), `delta` may be missing, and null text is empty text.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
// The server's describer of JSON kinds: both sides of the OpenAI wire name a wrong value alike.
use crate::serve::fields::kind_of;
use serde_json::{Map, Value};

use super::npy::{self, NpyError};

/// What one chunk (or a whole response) says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// Text of the reasoning: `delta.reasoning_content` (SGLang, llama.cpp, DeepSeek API,
    /// thinkbench serve) or `delta.reasoning` (vLLM >= 0.16, Ollama, OpenRouter). Empty if
    /// none.
    pub reasoning: String,
    /// `delta.content` (a null content is empty).
    pub content: String,
    /// `choices[0].logprobs.content[]` entries in order, after any
    /// `choices[0].logprobs.reasoning_content[]` entries (marked `reasoning: true`). Empty if
    /// absent or null.
    pub logprobs: Vec<LogprobEntry>,
    /// Whether the chunk carried log-probabilities: a `logprobs` array, or a `logprobs`
    /// object holding a `content` or `reasoning_content` array (possibly empty). False when
    /// `logprobs` is absent or null, or holds no such array.
    pub has_logprobs: bool,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// llama.cpp's `timings` object, when present.
    pub timings: Option<Timings>,
    /// Routing, when present in this chunk.
    pub routing: Option<RawRouting>,
    /// The `model` field, if present.
    pub model: Option<String>,
    /// Which choice the chunk is for (`choices[0].index`, default 0); None when the chunk has
    /// no choices (the usage-only chunk, the `sglext`-only chunk).
    pub index: Option<usize>,
}

/// One token's log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct LogprobEntry {
    /// The entry's `token` string (from `bytes`, lossily, when a server sends no `token`).
    pub token: String,
    /// `bytes` as given (UTF-8 bytes of the token; may be a partial character); None when
    /// absent or null.
    pub bytes: Option<Vec<u8>>,
    /// `f32::NEG_INFINITY` for "impossible": -9999 or below (OpenAI's and vLLM's sentinel,
    /// the lowest f32 or f64 some servers send) and null.
    pub logprob: f32,
    /// The token id (llama.cpp, thinkbench serve), when present.
    pub id: Option<u32>,
    /// `top_logprobs`, best first as sent.
    pub top: Vec<TopLogprob>,
    /// Whether the entry came from `logprobs.reasoning_content`.
    pub reasoning: bool,
}

/// One alternative of a token.
#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub bytes: Option<Vec<u8>>,
    pub logprob: f32,
    pub id: Option<u32>,
}

/// Token counts of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: Option<usize>,
    pub completion_tokens: Option<usize>,
    /// `completion_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: Option<usize>,
    /// `prompt_tokens_details.cached_tokens` (OpenAI, vLLM, SGLang) or DeepSeek's
    /// `prompt_cache_hit_tokens`.
    pub cached_tokens: Option<usize>,
}

/// llama.cpp's speed report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    pub prompt_n: Option<usize>,
    pub prompt_per_second: Option<f64>,
    pub predicted_n: Option<usize>,
    pub predicted_per_second: Option<f64>,
}

/// Routing as a server sent it, decoded to integers but not yet shaped (the shape needs the
/// model's layer count and top-k).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRouting {
    /// Expert ids, flattened `[tokens, layers, top_k]`.
    pub experts: Vec<i64>,
    /// The shape the server states: thinkbench serve's `routed_experts_shape`, the `.npy`
    /// header's shape (vLLM), or the nesting of a JSON array. None for SGLang (flat).
    pub shape: Option<Vec<usize>>,
    /// thinkbench serve's `routed_weights` (same layout), when present.
    pub weights: Option<Vec<f32>>,
    pub source: RoutingSource,
}

/// Which server's convention routing came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingSource {
    /// `sglext.routed_experts` alone.
    Sglang,
    /// `choices[0].routed_experts`.
    Vllm,
    /// `sglext` with `routed_experts_shape` or `routed_weights`.
    Thinkbench,
}

/// Routing in the model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapedRouting {
    pub tokens: usize,
    pub layers: usize,
    pub top_k: usize,
    /// `[token][layer][k]`: the chosen expert, None for padding (a negative id, or one not
    /// below the model's expert count).
    pub experts: Vec<Vec<Vec<Option<u32>>>>,
    /// `[token][layer][k]`, when the server sent weights.
    pub weights: Option<Vec<Vec<Vec<f32>>>>,
}

/// What is wrong with a payload. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed JSON in {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{what} is not a JSON object")]
    NotObject { what: &'static str },
    /// The payload was an error object (`{"error": …}`), not a chunk or response.
    #[error("the server reported an error: {0}")]
    Server(String),
    #[error("{field} is not valid base64: {source}")]
    Base64 {
        field: &'static str,
        source: base64::DecodeError,
    },
    #[error("{field} has {len} bytes, not a multiple of 4")]
    Width { field: &'static str, len: usize },
    #[error("{field} is not a usable .npy array: {source}")]
    Npy {
        field: &'static str,
        source: NpyError,
    },
    /// Routing that is malformed, or does not fit the model.
    #[error("{0}")]
    Routing(String),
}

/// One SSE `data:` payload of a streamed chat completion. An error object
/// (`{"error": …}`) is [`WireError::Server`] with its message.
pub fn parse_chunk(data: &str) -> Result<Chunk, WireError> {
    let v: Value = serde_json::from_str(data).map_err(|source| WireError::Json {
        what: "a streamed chunk",
        source,
    })?;
    decode(&v, "a streamed chunk", ["delta", "message"])
}

/// A whole non-streamed chat completion response (`message.reasoning_content` /
/// `message.reasoning` / `message.content`, `choices[0].logprobs`, usage, timings, routing).
/// An error object is [`WireError::Server`] with its message.
pub fn parse_response(body: &str) -> Result<Chunk, WireError> {
    let v: Value = serde_json::from_str(body).map_err(|source| WireError::Json {
        what: "a chat completion response",
        source,
    })?;
    decode(&v, "a chat completion response", ["message", "delta"])
}

/// If the payload is an error object mid-stream (`{"error": {...}}`, `{"error": "..."}`, or
/// vLLM's older flat `{"object": "error", "message": ...}`), its one-line message.
pub fn stream_error(data: &str) -> Option<String> {
    let v: Value = serde_json::from_str(data).ok()?;
    payload_error(v.as_object()?)
}

/// The human message of an HTTP error body: `{"error":{"message":..}}` (OpenAI, DeepSeek,
/// vLLM, llama.cpp), `{"error":"..."}`, `{"detail":"..."}` or `{"detail":[{"loc":..,
/// "msg":..}]}` (FastAPI validation, SGLang), `{"message":..}` (Ollama, others); otherwise the
/// body's first 200 characters on one line. None for an empty body.
pub fn error_message(body: &str) -> Option<String> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    if let Some(m) = serde_json::from_str::<Value>(body)
        .ok()
        .as_ref()
        .and_then(body_message)
    {
        return Some(m);
    }
    Some(one_line(body).chars().take(200).collect())
}

/// Shapes raw routing for a model with `layers` decoder layers (`num_hidden_layers`), `top_k`
/// experts per token (`num_experts_per_tok`) and `n_experts` routed experts
/// (`n_routed_experts`; 0 when unknown: then only negative ids are padding).
///
/// Errors when the length is not a multiple of `layers * top_k`, when a stated shape
/// disagrees with (`layers`, `top_k`) or with the length, or when weights and ids differ in
/// number.
pub fn shape_routing(
    raw: &RawRouting,
    layers: usize,
    top_k: usize,
    n_experts: usize,
) -> Result<ShapedRouting, WireError> {
    let bad = |m: String| Err(WireError::Routing(m));
    if layers == 0 || top_k == 0 {
        return bad(format!(
            "cannot shape routing for {layers} layers × {top_k} experts per token"
        ));
    }
    let len = raw.experts.len();
    if let Some(shape) = &raw.shape {
        let cells = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if cells != Some(len) {
            return bad(format!(
                "routing shape {shape:?} does not match its {len} expert ids"
            ));
        }
        match shape.as_slice() {
            [_, l, k] if (*l, *k) != (layers, top_k) => {
                return bad(format!(
                    "routing shape {shape:?} disagrees with the model's {layers} layers × \
                     {top_k} experts per token"
                ))
            }
            [_, _, _] | [_] => {}
            _ => {
                return bad(format!(
                    "routing shape {shape:?} is not [tokens, layers, top_k]"
                ))
            }
        }
    }
    let row = layers * top_k;
    if !len.is_multiple_of(row) {
        return bad(format!(
            "routed_experts has {len} ids, not a multiple of {layers} layers × {top_k} \
             experts per token = {row}"
        ));
    }
    if let Some(w) = &raw.weights {
        if w.len() != len {
            return bad(format!(
                "routed_weights has {} values but routed_experts has {len} ids",
                w.len()
            ));
        }
    }
    let tokens = len / row;
    let expert = |e: i64| {
        u32::try_from(e)
            .ok()
            .filter(|&e| n_experts == 0 || (e as usize) < n_experts)
    };
    let experts = raw
        .experts
        .chunks(row)
        .map(|t| {
            t.chunks(top_k)
                .map(|l| l.iter().map(|&e| expert(e)).collect())
                .collect()
        })
        .collect();
    let weights = raw.weights.as_ref().map(|w| {
        w.chunks(row)
            .map(|t| t.chunks(top_k).map(<[f32]>::to_vec).collect())
            .collect()
    });
    Ok(ShapedRouting {
        tokens,
        layers,
        top_k,
        experts,
        weights,
    })
}

/// A chunk or response; `keys` are the message object's names, preferred first.
fn decode(v: &Value, what: &'static str, keys: [&str; 2]) -> Result<Chunk, WireError> {
    let obj = v.as_object().ok_or(WireError::NotObject { what })?;
    if !obj.contains_key("choices") {
        if let Some(m) = payload_error(obj) {
            return Err(WireError::Server(m));
        }
    }
    let choice = obj
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(Value::as_object);
    let mut chunk = Chunk {
        model: obj.get("model").and_then(Value::as_str).map(str::to_owned),
        usage: obj.get("usage").and_then(usage),
        timings: obj.get("timings").and_then(timings),
        routing: routing(obj, choice)?,
        ..Chunk::default()
    };
    if let Some(choice) = choice {
        chunk.index = Some(choice.get("index").and_then(count).unwrap_or(0));
        let message = keys
            .iter()
            .find_map(|k| choice.get(*k).and_then(Value::as_object));
        if let Some(m) = message {
            chunk.reasoning = text(m.get("reasoning_content"));
            if chunk.reasoning.is_empty() {
                chunk.reasoning = text(m.get("reasoning"));
            }
            chunk.content = text(m.get("content"));
        } else {
            // A legacy completions choice.
            chunk.content = text(choice.get("text"));
        }
        chunk.finish_reason = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        (chunk.logprobs, chunk.has_logprobs) = logprobs(choice.get("logprobs"));
    }
    Ok(chunk)
}

/// A text field: a string, or an array of `{"type": "text", "text": …}` parts; else empty.
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// A non-negative integer (an integral float such as `12.0` too).
fn count(v: &Value) -> Option<usize> {
    if let Some(n) = v.as_u64() {
        return usize::try_from(n).ok();
    }
    let f = v.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64).then_some(f as usize)
}

fn usage(v: &Value) -> Option<Usage> {
    let o = v.as_object()?;
    let get = |k: &str| o.get(k).and_then(count);
    let detail = |d: &str, k: &str| o.get(d).and_then(|d| d.get(k)).and_then(count);
    Some(Usage {
        prompt_tokens: get("prompt_tokens"),
        completion_tokens: get("completion_tokens"),
        reasoning_tokens: detail("completion_tokens_details", "reasoning_tokens"),
        cached_tokens: detail("prompt_tokens_details", "cached_tokens")
            .or_else(|| get("prompt_cache_hit_tokens")),
    })
}

fn timings(v: &Value) -> Option<Timings> {
    let o = v.as_object()?;
    Some(Timings {
        prompt_n: o.get("prompt_n").and_then(count),
        prompt_per_second: o.get("prompt_per_second").and_then(Value::as_f64),
        predicted_n: o.get("predicted_n").and_then(count),
        predicted_per_second: o.get("predicted_per_second").and_then(Value::as_f64),
    })
}

/// `(entries, has_logprobs)` of a choice's `logprobs`.
fn logprobs(v: Option<&Value>) -> (Vec<LogprobEntry>, bool) {
    let entries = |a: &[Value], reasoning: bool| -> Vec<LogprobEntry> {
        a.iter().filter_map(|e| entry(e, reasoning)).collect()
    };
    match v {
        Some(Value::Array(a)) => (entries(a, false), true),
        Some(Value::Object(o)) => {
            let reasoning = o.get("reasoning_content").and_then(Value::as_array);
            let content = o.get("content").and_then(Value::as_array);
            let mut out = reasoning.map_or_else(Vec::new, |a| entries(a, true));
            out.extend(content.map_or_else(Vec::new, |a| entries(a, false)));
            (out, reasoning.is_some() || content.is_some())
        }
        _ => (Vec::new(), false),
    }
}

/// A log-probability; -9999 and below (and null, or anything not a number) are impossible.
fn logprob_value(v: Option<&Value>) -> f32 {
    match v.and_then(Value::as_f64) {
        Some(x) if x > -9999.0 => x as f32,
        _ => f32::NEG_INFINITY,
    }
}

fn byte_list(v: Option<&Value>) -> Option<Vec<u8>> {
    v?.as_array()?
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
        .collect()
}

/// `(token, bytes, logprob, id)` of an entry or an alternative.
fn token_fields(o: &Map<String, Value>) -> (String, Option<Vec<u8>>, f32, Option<u32>) {
    let bytes = byte_list(o.get("bytes"));
    let token = match o.get("token").and_then(Value::as_str) {
        Some(t) => t.to_owned(),
        None => bytes
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default(),
    };
    let id = o
        .get("id")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok());
    (token, bytes, logprob_value(o.get("logprob")), id)
}

fn entry(v: &Value, reasoning: bool) -> Option<LogprobEntry> {
    let o = v.as_object()?;
    let (token, bytes, logprob, id) = token_fields(o);
    let top = match o.get("top_logprobs") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_object)
            .map(|t| {
                let (token, bytes, logprob, id) = token_fields(t);
                TopLogprob {
                    token,
                    bytes,
                    logprob,
                    id,
                }
            })
            .collect(),
        // The legacy `{token: logprob}` form: best first.
        Some(Value::Object(m)) => {
            let mut top: Vec<TopLogprob> = m
                .iter()
                .map(|(token, lp)| TopLogprob {
                    token: token.clone(),
                    bytes: None,
                    logprob: logprob_value(Some(lp)),
                    id: None,
                })
                .collect();
            top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
            top
        }
        _ => Vec::new(),
    };
    Some(LogprobEntry {
        token,
        bytes,
        logprob,
        id,
        top,
        reasoning,
    })
}

/// The error message of an error payload, if it is one.
fn payload_error(o: &Map<String, Value>) -> Option<String> {
    match o.get("error") {
        Some(Value::Null) | None => {}
        Some(e) => return Some(error_value_message(e)),
    }
    if o.get("object").and_then(Value::as_str) == Some("error") {
        return Some(
            nonempty_str(o.get("message"))
                .map(one_line)
                .unwrap_or_else(|| one_line(&Value::Object(o.clone()).to_string())),
        );
    }
    None
}

/// The message of an `error` value: a string, or an object's `message`; else its JSON.
fn error_value_message(e: &Value) -> String {
    if let Some(s) = e.as_str() {
        return one_line(s);
    }
    nonempty_str(e.get("message"))
        .map(one_line)
        .unwrap_or_else(|| one_line(&e.to_string()))
}

fn nonempty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

/// The message of an HTTP error body's JSON, if it has one where servers put it.
fn body_message(v: &Value) -> Option<String> {
    let o = v.as_object()?;
    if let Some(e) = o.get("error").filter(|e| !e.is_null()) {
        if let Some(s) = nonempty_str(Some(e)).or_else(|| nonempty_str(e.get("message"))) {
            return Some(one_line(s));
        }
    }
    match o.get("detail") {
        Some(Value::String(s)) if !s.trim().is_empty() => return Some(one_line(s)),
        Some(Value::Array(items)) => {
            let msgs: Vec<String> = items.iter().filter_map(validation_item).collect();
            if !msgs.is_empty() {
                return Some(msgs.join("; "));
            }
        }
        _ => {}
    }
    nonempty_str(o.get("message")).map(one_line)
}

/// One FastAPI validation error: `"body.messages: Field required"`.
fn validation_item(item: &Value) -> Option<String> {
    let msg = one_line(nonempty_str(item.get("msg"))?);
    let loc: Vec<String> = item
        .get("loc")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|p| match p {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(if loc.is_empty() {
        msg
    } else {
        format!("{}: {msg}", loc.join("."))
    })
}

/// `s` with every run of whitespace (newlines included) as one space, trimmed.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Routing from wherever a server put it (see the module docs), first found wins.
fn routing(
    obj: &Map<String, Value>,
    choice: Option<&Map<String, Value>>,
) -> Result<Option<RawRouting>, WireError> {
    let exts = [
        obj.get("sglext"),
        obj.get("sgl_ext"),
        choice.and_then(|c| c.get("sglext")),
        choice.and_then(|c| c.get("sgl_ext")),
    ];
    for ext in exts.into_iter().flatten().filter_map(Value::as_object) {
        if let Some(r) = sgl_routing(ext)? {
            return Ok(Some(r));
        }
    }
    match choice.and_then(|c| c.get("routed_experts")) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let (experts, shape) = table(v, "routed_experts")?;
            Ok(Some(RawRouting {
                experts,
                shape,
                weights: None,
                source: RoutingSource::Vllm,
            }))
        }
    }
}

/// Routing in an `sglext` object (SGLang, thinkbench serve); None without `routed_experts`.
fn sgl_routing(ext: &Map<String, Value>) -> Result<Option<RawRouting>, WireError> {
    let Some(re) = ext.get("routed_experts").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let (experts, npy_shape) = table(re, "routed_experts")?;
    let stated = match ext.get("routed_experts_shape") {
        None | Some(Value::Null) => None,
        Some(s) => Some(
            s.as_array()
                .and_then(|a| a.iter().map(count).collect::<Option<Vec<usize>>>())
                .ok_or_else(|| {
                    WireError::Routing(format!("routed_experts_shape is not a list of sizes: {s}"))
                })?,
        ),
    };
    let weights = match ext.get("routed_weights") {
        None | Some(Value::Null) => None,
        Some(w) => Some(weights(w)?),
    };
    if let Some(w) = &weights {
        if w.len() != experts.len() {
            return Err(WireError::Routing(format!(
                "routed_weights has {} values but routed_experts has {} ids",
                w.len(),
                experts.len()
            )));
        }
    }
    let source = if stated.is_some() || weights.is_some() {
        RoutingSource::Thinkbench
    } else {
        RoutingSource::Sglang
    };
    Ok(Some(RawRouting {
        experts,
        shape: stated.or(npy_shape),
        weights,
        source,
    }))
}

/// Base64 text, with any whitespace (line-wrapped encoders) removed.
fn base64_bytes(s: &str, field: &'static str) -> Result<Vec<u8>, WireError> {
    let compact: String;
    let s = if s.contains(|c: char| c.is_ascii_whitespace()) {
        compact = s.split_ascii_whitespace().collect();
        compact.as_str()
    } else {
        s
    };
    STANDARD
        .decode(s)
        .map_err(|source| WireError::Base64 { field, source })
}

/// An id table: base64 (of a `.npy` file, or of raw little-endian int32) or a nested JSON
/// integer array. Returns the ids and the shape the encoding states, if any.
fn table(v: &Value, field: &'static str) -> Result<(Vec<i64>, Option<Vec<usize>>), WireError> {
    match v {
        Value::String(s) => {
            let bytes = base64_bytes(s, field)?;
            if npy::is_npy(&bytes) {
                let a =
                    npy::decode_npy(&bytes).map_err(|source| WireError::Npy { field, source })?;
                return Ok((a.values, Some(a.shape)));
            }
            if bytes.len() % 4 != 0 {
                return Err(WireError::Width {
                    field,
                    len: bytes.len(),
                });
            }
            let ids = bytes
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            Ok((ids, None))
        }
        Value::Array(_) => {
            let (ids, shape) = nested(v).map_err(|m| WireError::Routing(format!("{field} {m}")))?;
            Ok((ids, Some(shape)))
        }
        other => Err(WireError::Routing(format!(
            "{field} is neither base64 text nor an array: {}",
            kind_of(other)
        ))),
    }
}

/// A nested integer array flattened in C order, with the shape its nesting gives (from the
/// first element at each depth; every other element must agree).
fn nested(v: &Value) -> Result<(Vec<i64>, Vec<usize>), String> {
    let mut shape = Vec::new();
    let mut cur = v;
    while let Value::Array(a) = cur {
        shape.push(a.len());
        match a.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    let mut out = Vec::new();
    walk(v, &shape, &mut out)?;
    Ok((out, shape))
}

fn walk(v: &Value, shape: &[usize], out: &mut Vec<i64>) -> Result<(), String> {
    match (v, shape.split_first()) {
        (Value::Array(a), Some((&n, rest))) => {
            if a.len() != n {
                return Err(format!(
                    "is a ragged array: a row of {} where {n} was expected",
                    a.len()
                ));
            }
            a.iter().try_for_each(|x| walk(x, rest, out))
        }
        (Value::Array(_), None) => Err("is a ragged array: nested deeper in places".into()),
        (_, Some(_)) => Err("is a ragged array: shallower in places".into()),
        (x, None) => {
            out.push(
                x.as_i64()
                    .ok_or_else(|| format!("holds {} where an integer id belongs", kind_of(x)))?,
            );
            Ok(())
        }
    }
}

/// `routed_weights`: base64 of little-endian f32, or a JSON array of numbers.
fn weights(v: &Value) -> Result<Vec<f32>, WireError> {
    const FIELD: &str = "routed_weights";
    match v {
        Value::String(s) => {
            let bytes = base64_bytes(s, FIELD)?;
            if bytes.len() % 4 != 0 {
                return Err(WireError::Width {
                    field: FIELD,
                    len: bytes.len(),
                });
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        }
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_f64().map(|x| x as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| WireError::Routing(format!("{FIELD} holds something not a number"))),
        other => Err(WireError::Routing(format!(
            "{FIELD} is neither base64 text nor an array: {}",
            kind_of(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Base64 of little-endian int32s (the encoder itself is checked against a hand-made
    /// string in `hand_encoded_base64_matches`).
    fn b64_i32(ids: &[i32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        STANDARD.encode(bytes)
    }

    fn b64_f32(ws: &[f32]) -> String {
        let bytes: Vec<u8> = ws.iter().flat_map(|w| w.to_le_bytes()).collect();
        STANDARD.encode(bytes)
    }

    #[test]
    fn hand_encoded_base64_matches() {
        // [3, -1] as LE int32: 03 00 00 00 ff ff ff ff -> "AwAA" "AP//" "//8=".
        assert_eq!(b64_i32(&[3, -1]), "AwAAAP////8=");
        let c =
            parse_chunk(r#"{"choices":[],"sglext":{"routed_experts":"AwAAAP////8="}}"#).unwrap();
        assert_eq!(c.routing.unwrap().experts, vec![3, -1]);
    }

    #[test]
    fn sglang_final_chunk_with_sglext() {
        // 2 tokens × 2 layers × top-2. Layer 0 is dense (all -1); 64 is past a 64-expert
        // model's range.
        let ids = [-1, -1, 5, 63, -1, -1, 64, 0];
        let data = format!(
            r#"{{"id":"0c1f","object":"chat.completion.chunk","created":1700000000,
               "model":"deepseek-ai/DeepSeek-V2-Lite-Chat",
               "choices":[{{"index":0,"delta":{{"content":""}},"logprobs":null,
                            "finish_reason":"stop","matched_stop":1}}],
               "usage":null,
               "sglext":{{"routed_experts":"{}"}}}}"#,
            b64_i32(&ids)
        );
        let c = parse_chunk(&data).unwrap();
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        assert_eq!(c.index, Some(0));
        assert_eq!(c.usage, None);
        assert!(!c.has_logprobs);
        let raw = c.routing.unwrap();
        assert_eq!(raw.source, RoutingSource::Sglang);
        assert_eq!(raw.shape, None);
        assert_eq!(raw.weights, None);
        assert_eq!(raw.experts, vec![-1, -1, 5, 63, -1, -1, 64, 0]);
        let s = shape_routing(&raw, 2, 2, 64).unwrap();
        assert_eq!((s.tokens, s.layers, s.top_k), (2, 2, 2));
        assert_eq!(
            s.experts,
            vec![
                vec![vec![None, None], vec![Some(5), Some(63)]],
                vec![vec![None, None], vec![None, Some(0)]],
            ]
        );
        assert_eq!(s.weights, None);
    }

    #[test]
    fn sglext_only_chunk_with_no_choices_and_on_a_choice() {
        let data = format!(
            r#"{{"id":"x","choices":[],"sgl_ext":{{"routed_experts":"{}"}}}}"#,
            b64_i32(&[1, 2])
        );
        let c = parse_chunk(&data).unwrap();
        assert_eq!(c.index, None);
        assert_eq!(c.routing.unwrap().experts, vec![1, 2]);
        let data = format!(
            r#"{{"choices":[{{"index":0,"delta":{{}},"sgl_ext":{{"routed_experts":"{}"}}}}]}}"#,
            b64_i32(&[7])
        );
        let r = parse_chunk(&data).unwrap().routing.unwrap();
        assert_eq!((r.experts, r.source), (vec![7], RoutingSource::Sglang));
    }

    #[test]
    fn routing_length_that_does_not_fit_is_an_error() {
        let raw = RawRouting {
            experts: vec![0; 7],
            shape: None,
            weights: None,
            source: RoutingSource::Sglang,
        };
        let e = shape_routing(&raw, 2, 2, 8).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routed_experts has 7 ids, not a multiple of 2 layers × 2 experts per token = 4"
        );
        assert!(shape_routing(&raw, 0, 2, 8).is_err());
    }

    #[test]
    fn routing_bytes_not_a_multiple_of_four_and_bad_base64() {
        // "AQID" is the three bytes 01 02 03.
        let e = parse_chunk(r#"{"choices":[],"sglext":{"routed_experts":"AQID"}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routed_experts has 3 bytes, not a multiple of 4"
        );
        let e = parse_chunk(r#"{"choices":[],"sglext":{"routed_experts":"@@@@"}}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("routed_experts is not valid base64"),
            "{e}"
        );
        let e = parse_chunk(r#"{"choices":[],"sglext":{"routed_experts":5}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routed_experts is neither base64 text nor an array: a number"
        );
    }

    #[test]
    fn thinkbench_serve_with_weights_and_shape() {
        // 1 token × 3 layers × top-2; layer 0 dense.
        let ids = [-1, -1, 3, 4, 5, -1];
        let ws = [0.0, 0.0, 0.5, 0.25, 1.0, 0.0];
        let data = format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","model":"tiny-moe","choices":[],
               "sglext":{{"routed_experts":"{e}","routed_weights":"{w}",
                          "routed_experts_shape":[1,3,2],
                          "choices":[{{"index":1,"routed_experts":"","routed_experts_shape":[0,3,2]}}]}}}}"#,
            e = b64_i32(&ids),
            w = b64_f32(&ws)
        );
        let c = parse_chunk(&data).unwrap();
        assert_eq!(c.model.as_deref(), Some("tiny-moe"));
        let raw = c.routing.unwrap();
        assert_eq!(raw.source, RoutingSource::Thinkbench);
        assert_eq!(raw.shape, Some(vec![1, 3, 2]));
        let s = shape_routing(&raw, 3, 2, 8).unwrap();
        assert_eq!(
            s.experts,
            vec![vec![
                vec![None, None],
                vec![Some(3), Some(4)],
                vec![Some(5), None]
            ]]
        );
        assert_eq!(
            s.weights,
            Some(vec![vec![vec![0.0, 0.0], vec![0.5, 0.25], vec![1.0, 0.0]]])
        );
        // The stated shape names 3 layers; a 2-layer model cannot take it even though 6 ids
        // would divide.
        let e = shape_routing(&raw, 2, 3, 8).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routing shape [1, 3, 2] disagrees with the model's 2 layers × 3 experts per token"
        );
    }

    #[test]
    fn weights_of_another_length_are_an_error() {
        let data = format!(
            r#"{{"choices":[],"sglext":{{"routed_experts":"{}","routed_weights":"{}"}}}}"#,
            b64_i32(&[1, 2]),
            b64_f32(&[0.5])
        );
        let e = parse_chunk(&data).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routed_weights has 1 values but routed_experts has 2 ids"
        );
    }

    /// np.save of a `|u1` array of shape (2, 2, 2) holding 0..8 with 7 set to 255.
    fn vllm_npy() -> Vec<u8> {
        let dict = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 2), }";
        // 10 bytes of preamble + 118 of header = 128, a multiple of 64.
        let header = format!("{dict:<117}\n");
        assert_eq!(header.len(), 118);
        let mut b = vec![0x93, b'N', b'U', b'M', b'P', b'Y', 1, 0, 118, 0];
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&[0, 1, 2, 3, 4, 5, 6, 255]);
        b
    }

    #[test]
    fn vllm_non_streaming_with_npy_routing() {
        let body = format!(
            r#"{{"id":"chatcmpl-abc","object":"chat.completion","created":1,"model":"Qwen/Qwen3-30B-A3B",
               "choices":[{{"index":0,
                 "message":{{"role":"assistant","content":"4","reasoning":"2 plus 2.","tool_calls":[]}},
                 "logprobs":null,"finish_reason":"stop","stop_reason":null,
                 "routed_experts":"{}"}}],
               "usage":{{"prompt_tokens":10,"total_tokens":15,"completion_tokens":5,
                        "prompt_tokens_details":null}},
               "prompt_logprobs":null,"kv_transfer_params":null}}"#,
            STANDARD.encode(vllm_npy())
        );
        let c = parse_response(&body).unwrap();
        assert_eq!(c.reasoning, "2 plus 2.");
        assert_eq!(c.content, "4");
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: Some(10),
                completion_tokens: Some(5),
                reasoning_tokens: None,
                cached_tokens: None,
            })
        );
        let raw = c.routing.unwrap();
        assert_eq!(raw.source, RoutingSource::Vllm);
        assert_eq!(raw.shape, Some(vec![2, 2, 2]));
        assert_eq!(raw.experts, vec![0, 1, 2, 3, 4, 5, 6, 255]);
        let s = shape_routing(&raw, 2, 2, 128).unwrap();
        assert_eq!(s.experts[1][1], vec![Some(6), None]);
        assert_eq!(s.experts[0][0], vec![Some(0), Some(1)]);
        // A model with 4 layers × top-1 has the same 8 cells but not the stated shape.
        assert!(shape_routing(&raw, 4, 1, 128).is_err());
    }

    #[test]
    fn vllm_npy_in_fortran_order_is_an_error() {
        let mut b = vllm_npy();
        let at = b.windows(5).position(|w| w == b"False").unwrap();
        b.splice(at..at + 5, *b"True ");
        let body = format!(
            r#"{{"choices":[{{"index":0,"message":{{"content":"x"}},"routed_experts":"{}"}}]}}"#,
            STANDARD.encode(b)
        );
        let e = parse_response(&body).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routed_experts is not a usable .npy array: the .npy array is in Fortran order; \
             only C order is read"
        );
    }

    #[test]
    fn vllm_nested_array_routing() {
        let body = r#"{"choices":[{"index":0,"message":{"content":"x"},
                        "routed_experts":[[[1,2],[3,4]],[[5,6],[7,-1]],[[0,0],[1,1]]]}]}"#;
        let raw = parse_response(body).unwrap().routing.unwrap();
        assert_eq!(raw.shape, Some(vec![3, 2, 2]));
        assert_eq!(raw.experts, vec![1, 2, 3, 4, 5, 6, 7, -1, 0, 0, 1, 1]);
        assert_eq!(shape_routing(&raw, 2, 2, 8).unwrap().tokens, 3);
        let ragged = r#"{"choices":[{"message":{},"routed_experts":[[1,2],[3]]}]}"#;
        let e = parse_response(ragged).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routed_experts is a ragged array: a row of 1 where 2 was expected"
        );
    }

    #[test]
    fn vllm_streamed_reasoning_delta() {
        let c = parse_chunk(
            r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,
                "model":"Qwen/Qwen3-8B","choices":[{"index":0,
                "delta":{"reasoning":" so the sum"},"logprobs":null,"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(c.reasoning, " so the sum");
        assert_eq!(c.content, "");
        assert_eq!(c.finish_reason, None);
        // A transitional build sending both names with one text: taken once.
        let c = parse_chunk(
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"ab","reasoning":"ab"}}]}"#,
        )
        .unwrap();
        assert_eq!(c.reasoning, "ab");
    }

    #[test]
    fn ollama_chunk() {
        let c = parse_chunk(
            r#"{"id":"chatcmpl-402","object":"chat.completion.chunk","created":1,
                "model":"deepseek-r1:8b","system_fingerprint":"fp_ollama",
                "choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":"Okay,"},
                "finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(c.reasoning, "Okay,");
        assert_eq!(c.model.as_deref(), Some("deepseek-r1:8b"));
    }

    #[test]
    fn llama_cpp_chunk_with_ids_and_timings() {
        let c = parse_chunk(
            r#"{"choices":[{"finish_reason":"length","index":0,"delta":{"content":" Hi"},
                "logprobs":{"content":[{"id":15043,"token":" Hi","bytes":[32,72,105],
                  "logprob":-0.125,
                  "top_logprobs":[{"id":15043,"token":" Hi","bytes":[32,72,105],"logprob":-0.125},
                                  {"id":29871,"token":" ","bytes":[32],"logprob":-2.5}]}]}}],
                "created":1,"id":"chatcmpl-l","model":"gpt-3.5-turbo","system_fingerprint":"b6000",
                "object":"chat.completion.chunk",
                "usage":{"completion_tokens":16,"prompt_tokens":9,"total_tokens":25},
                "timings":{"prompt_n":9,"prompt_ms":30.2,"prompt_per_token_ms":3.36,
                  "prompt_per_second":298.0,"predicted_n":16,"predicted_ms":160.0,
                  "predicted_per_token_ms":10.0,"predicted_per_second":100.0}}"#,
        )
        .unwrap();
        assert_eq!(c.content, " Hi");
        assert!(c.has_logprobs);
        assert_eq!(
            c.logprobs,
            vec![LogprobEntry {
                token: " Hi".into(),
                bytes: Some(vec![32, 72, 105]),
                logprob: -0.125,
                id: Some(15043),
                top: vec![
                    TopLogprob {
                        token: " Hi".into(),
                        bytes: Some(vec![32, 72, 105]),
                        logprob: -0.125,
                        id: Some(15043)
                    },
                    TopLogprob {
                        token: " ".into(),
                        bytes: Some(vec![32]),
                        logprob: -2.5,
                        id: Some(29871)
                    },
                ],
                reasoning: false,
            }]
        );
        assert_eq!(
            c.timings,
            Some(Timings {
                prompt_n: Some(9),
                prompt_per_second: Some(298.0),
                predicted_n: Some(16),
                predicted_per_second: Some(100.0),
            })
        );
        assert_eq!(c.usage.unwrap().completion_tokens, Some(16));
    }

    #[test]
    fn deepseek_reasoner_chunks() {
        let c = parse_chunk(
            r#"{"id":"d1","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner",
                "system_fingerprint":"fp_1","choices":[{"index":0,
                "delta":{"content":null,"reasoning_content":"Hmm"},"logprobs":null,
                "finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!((c.reasoning.as_str(), c.content.as_str()), ("Hmm", ""));
        let c = parse_chunk(
            r#"{"id":"d1","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner",
                "choices":[{"index":0,"delta":{"content":"","reasoning_content":null},
                "logprobs":null,"finish_reason":"stop"}],
                "usage":{"prompt_tokens":17,"completion_tokens":300,"total_tokens":317,
                  "prompt_tokens_details":{"cached_tokens":0},
                  "completion_tokens_details":{"reasoning_tokens":280},
                  "prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":17}}"#,
        )
        .unwrap();
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: Some(17),
                completion_tokens: Some(300),
                reasoning_tokens: Some(280),
                cached_tokens: Some(0),
            })
        );
        // Older responses carry only prompt_cache_hit_tokens.
        let c = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":64,"completion_tokens":2,
                "prompt_cache_hit_tokens":60,"prompt_cache_miss_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(c.usage.unwrap().cached_tokens, Some(60));
    }

    #[test]
    fn openai_usage_only_final_chunk() {
        let c = parse_chunk(
            r#"{"id":"chatcmpl-z","object":"chat.completion.chunk","created":1,
                "model":"o4-mini","service_tier":"default","system_fingerprint":null,
                "choices":[],"usage":{"prompt_tokens":20,"completion_tokens":150,
                "total_tokens":170,"prompt_tokens_details":{"cached_tokens":8,"audio_tokens":0},
                "completion_tokens_details":{"reasoning_tokens":128,"audio_tokens":0,
                "accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
        )
        .unwrap();
        assert_eq!(c.index, None);
        assert_eq!(c.content, "");
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: Some(20),
                completion_tokens: Some(150),
                reasoning_tokens: Some(128),
                cached_tokens: Some(8),
            })
        );
    }

    #[test]
    fn openai_logprobs_with_alternatives_and_sentinels() {
        let c = parse_chunk(
            r#"{"choices":[{"index":2,"delta":{"content":"Hello"},"finish_reason":null,
                "logprobs":{"content":[
                  {"token":"Hello","logprob":-0.5,"bytes":[72,101,108,108,111],
                   "top_logprobs":[{"token":"Hello","logprob":-0.5,"bytes":[72,101,108,108,111]},
                                   {"token":"Hi","logprob":-9999.0,"bytes":[72,105]}]},
                  {"logprob":-3.4028234663852886e38,"bytes":[226,128],"top_logprobs":null},
                  {"token":"x","logprob":null,"bytes":null},
                  {"token":"y","logprob":-1.7976931348623157e308},
                  {"token":"z","logprob":-9998.5,"top_logprobs":[]}
                ],"refusal":null}}]}"#,
        )
        .unwrap();
        assert_eq!(c.index, Some(2));
        let lp = &c.logprobs;
        assert_eq!(lp.len(), 5);
        assert_eq!(lp[0].token, "Hello");
        assert_eq!(lp[0].logprob, -0.5);
        assert_eq!(lp[0].id, None);
        assert_eq!(lp[0].top[1].token, "Hi");
        assert_eq!(lp[0].top[1].logprob, f32::NEG_INFINITY);
        // No token: from the bytes, a partial character (U+FFFD).
        assert_eq!(lp[1].token, "\u{fffd}");
        assert_eq!(lp[1].bytes, Some(vec![226, 128]));
        assert_eq!(lp[1].logprob, f32::NEG_INFINITY);
        assert!(lp[1].top.is_empty());
        assert_eq!(
            (lp[2].bytes.clone(), lp[2].logprob),
            (None, f32::NEG_INFINITY)
        );
        assert_eq!(lp[3].logprob, f32::NEG_INFINITY);
        assert_eq!(lp[4].logprob, -9998.5);
    }

    #[test]
    fn reasoning_logprobs_come_first() {
        let c = parse_chunk(
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"a","content":"b"},
                "logprobs":{"content":[{"token":"b","logprob":-1.0}],
                            "reasoning_content":[{"token":"a","logprob":-2.0}]}}]}"#,
        )
        .unwrap();
        let got: Vec<(&str, f32, bool)> = c
            .logprobs
            .iter()
            .map(|e| (e.token.as_str(), e.logprob, e.reasoning))
            .collect();
        assert_eq!(got, vec![("a", -2.0, true), ("b", -1.0, false)]);
    }

    #[test]
    fn has_logprobs_distinguishes_absent_null_and_empty() {
        let with = |lp: &str| {
            parse_chunk(&format!(
                r#"{{"choices":[{{"index":0,"delta":{{"content":""}},"logprobs":{lp}}}]}}"#
            ))
            .unwrap()
            .has_logprobs
        };
        assert!(!with("null"));
        assert!(with(r#"{"content":[]}"#));
        assert!(!with(r#"{"content":null,"refusal":null}"#));
        let c = parse_chunk(r#"{"choices":[{"index":0,"delta":{"content":"x"}}]}"#).unwrap();
        assert!(!c.has_logprobs);
    }

    #[test]
    fn thinkbench_serve_chunk() {
        let c = parse_chunk(
            r#"{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"r1-distill",
                "choices":[{"index":0,"delta":{"reasoning_content":"Let"},"finish_reason":null,
                "logprobs":{"content":[{"bytes":[76,101,116],"token":"Let","logprob":-0.25,"id":10267,
                  "top_logprobs":[{"bytes":[76,101,116],"token":"Let","logprob":-0.25,"id":10267}]}]}}]}"#,
        )
        .unwrap();
        assert_eq!(c.reasoning, "Let");
        assert_eq!(c.logprobs[0].id, Some(10267));
        assert_eq!(c.logprobs[0].top[0].id, Some(10267));
    }

    #[test]
    fn tolerant_of_missing_delta_and_unknown_fields() {
        let c =
            parse_chunk(r#"{"choices":[{"index":1,"whatever":{"a":[1]}}],"extra":true}"#).unwrap();
        assert_eq!(c.index, Some(1));
        assert_eq!((c.reasoning.as_str(), c.content.as_str()), ("", ""));
        // A role-only first chunk.
        let c = parse_chunk(r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#).unwrap();
        assert_eq!(c.index, Some(0));
    }

    #[test]
    fn non_streamed_response_fields() {
        let c = parse_response(
            r#"{"id":"x","object":"chat.completion","model":"m",
                "choices":[{"index":0,"message":{"role":"assistant","content":"Four.",
                  "reasoning_content":"2+2"},"finish_reason":"stop",
                  "logprobs":{"content":[{"token":"Four","logprob":-0.75,"bytes":[70,111,117,114],
                  "top_logprobs":[]}]}}],
                "usage":{"prompt_tokens":3,"completion_tokens":4,
                  "completion_tokens_details":{"reasoning_tokens":2}}}"#,
        )
        .unwrap();
        assert_eq!(c.reasoning, "2+2");
        assert_eq!(c.content, "Four.");
        assert_eq!(c.logprobs[0].logprob, -0.75);
        assert_eq!(c.usage.unwrap().reasoning_tokens, Some(2));
    }

    #[test]
    fn errors_mid_stream() {
        let vllm = r#"{"error":{"message":"The model ran out of memory.\nTry a shorter prompt.",
                       "type":"InternalServerError","param":null,"code":500}}"#;
        assert_eq!(
            stream_error(vllm).as_deref(),
            Some("The model ran out of memory. Try a shorter prompt.")
        );
        let e = parse_chunk(vllm).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the server reported an error: The model ran out of memory. Try a shorter prompt."
        );
        assert_eq!(stream_error(r#"{"error":"boom"}"#).as_deref(), Some("boom"));
        assert_eq!(
            stream_error(r#"{"object":"error","message":"bad request","type":"x","code":400}"#)
                .as_deref(),
            Some("bad request")
        );
        assert_eq!(
            stream_error(r#"{"error":{"code":503}}"#).as_deref(),
            Some(r#"{"code":503}"#)
        );
        assert_eq!(stream_error(r#"{"choices":[],"error":null}"#), None);
        assert_eq!(
            stream_error(r#"{"choices":[{"index":0,"delta":{"content":"x"}}]}"#),
            None
        );
        assert_eq!(stream_error("not json"), None);
    }

    #[test]
    fn malformed_json_is_an_error() {
        let e = parse_chunk(r#"{"choices":[{"delta":"#).unwrap_err();
        assert!(matches!(e, WireError::Json { .. }));
        assert!(
            e.to_string()
                .starts_with("malformed JSON in a streamed chunk: "),
            "{e}"
        );
        let e = parse_response("<html>").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("malformed JSON in a chat completion response: "),
            "{e}"
        );
        assert_eq!(
            parse_chunk("[1]").unwrap_err().to_string(),
            "a streamed chunk is not a JSON object"
        );
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(
                r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error",
                   "param":null,"code":"invalid_api_key"}}"#
            )
            .as_deref(),
            Some("Incorrect API key provided.")
        );
        assert_eq!(
            error_message(r#"{"error":"model not found"}"#).as_deref(),
            Some("model not found")
        );
        assert_eq!(
            error_message(r#"{"detail":"Not Found"}"#).as_deref(),
            Some("Not Found")
        );
        assert_eq!(
            error_message(
                r#"{"detail":[{"type":"missing","loc":["body","messages"],"msg":"Field required",
                   "input":{}},{"loc":["body","n",0],"msg":"bad"}]}"#
            )
            .as_deref(),
            Some("body.messages: Field required; body.n.0: bad")
        );
        assert_eq!(
            error_message(r#"{"message":"unauthorized","code":401}"#).as_deref(),
            Some("unauthorized")
        );
        assert_eq!(
            error_message(
                r#"{"error":{"code":400,"message":"the request exceeds the available context size",
                   "type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":4096}}"#
            )
            .as_deref(),
            Some("the request exceeds the available context size")
        );
        let html = format!(
            "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>{}</body></html>",
            "x".repeat(300)
        );
        let m = error_message(&html).unwrap();
        assert_eq!(m.chars().count(), 200);
        assert!(m.starts_with("<html> <head><title>502 Bad Gateway</title></head> <body>xxx"));
        assert_eq!(
            error_message(r#"{"status":"bad"}"#).as_deref(),
            Some(r#"{"status":"bad"}"#)
        );
        assert_eq!(error_message(""), None);
        assert_eq!(error_message("  \n"), None);
    }
}
