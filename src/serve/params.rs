//! The generation fields both endpoints share, read from the JSON body and checked one by one:
//! a bad field is a 400 that names it (`param`) and says what it should be. `null` counts as
//! absent, as the openai SDKs send it.

use serde_json::Value;

use super::fields::{wrong, Fields};
use super::output::random_u64;
use super::ApiError;
use crate::backend::ModelInfo;
use crate::runtime::sampling::SamplingParams;

/// The most rows one request may ask for (`n`).
pub(crate) const MAX_N: u64 = 64;
/// The most alternatives per token (OpenAI's bound).
pub(crate) const MAX_TOP_LOGPROBS: u64 = 20;
/// The most stop strings (OpenAI's bound).
pub(crate) const MAX_STOP: usize = 4;

/// Which endpoint is asking: `logprobs` means different things on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
}

/// What a request asks of the engine and of the response, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GenParams {
    pub n: usize,
    /// Before clamping to the context.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// `Some(k)`: return log-probabilities with `k` alternatives per token.
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
    pub routing: bool,
    pub ignore_eos: bool,
    /// vLLM's `return_tokens_as_token_ids`: token strings become `token_id:ID`.
    pub tokens_as_ids: bool,
}

/// A `model` other than the one served is a 404, as OpenAI answers it; no `model` is fine.
pub(crate) fn check_model(f: &Fields, info: &ModelInfo) -> Result<(), ApiError> {
    match f.str("model")? {
        Some(m) if m != info.id => Err(ApiError::model_not_found(m, &info.id)),
        _ => Ok(()),
    }
}

impl GenParams {
    pub fn parse(f: &Fields, info: &ModelInfo, endpoint: Endpoint) -> Result<Self, ApiError> {
        refuse_unsupported(f)?;
        let defaults = &info.sampling;
        let sampling = SamplingParams {
            temperature: f
                .number("temperature", "between 0 and 100", |t| {
                    (0.0..=100.0).contains(&t)
                })?
                .map_or(defaults.temperature, |t| t as f32),
            top_p: f
                .number("top_p", "greater than 0 and at most 1", |p| {
                    p > 0.0 && p <= 1.0
                })?
                .map_or(defaults.top_p, |p| p as f32),
            // vLLM spells "no top-k" -1; the engine spells it 0.
            top_k: f
                .int("top_k", -1, i64::from(u32::MAX))?
                .map_or(defaults.top_k, |k| k.max(0) as usize),
            min_p: f
                .number("min_p", "between 0 and 1", |p| (0.0..=1.0).contains(&p))?
                .map_or(defaults.min_p, |p| p as f32),
            repetition_penalty: f
                .number("repetition_penalty", "greater than 0", |p| p > 0.0)?
                .map_or(defaults.repetition_penalty, |p| p as f32),
            seed: seed(f)?.unwrap_or_else(random_u64),
        };
        let max_tokens = match f.int("max_completion_tokens", 1, i64::MAX)? {
            Some(m) => Some(m),
            None => f.int("max_tokens", 1, i64::MAX)?,
        };
        let logprobs = match endpoint {
            Endpoint::Chat => {
                let on = f.bool("logprobs")?.unwrap_or(false);
                let top = f.int("top_logprobs", 0, MAX_TOP_LOGPROBS as i64)?;
                if top.is_some_and(|k| k > 0) && !on {
                    return Err(ApiError::bad_field(
                        "top_logprobs",
                        "`top_logprobs` needs `logprobs: true`",
                    ));
                }
                on.then_some(top.unwrap_or(0) as usize)
            }
            // The legacy field: the number of alternatives (0 = the chosen tokens only).
            Endpoint::Completions => f
                .int("logprobs", 0, MAX_TOP_LOGPROBS as i64)?
                .map(|k| k as usize),
        };
        let stream = f.bool("stream")?.unwrap_or(false);
        let include_usage = match f.get("stream_options") {
            None => false,
            Some(Value::Object(o)) => Fields(o)
                .bool("include_usage")
                .map_err(|_| wrong_nested("stream_options.include_usage", "a boolean"))?
                .unwrap_or(false),
            Some(v) => return Err(wrong("stream_options", "an object", v)),
        };
        let routing = f.bool("return_routed_experts")?.unwrap_or(false);
        if routing && info.moe_layers.is_empty() {
            return Err(ApiError::bad_field(
                "return_routed_experts",
                format!("the model `{}` has no routed experts to return", info.id),
            ));
        }
        Ok(Self {
            n: f.int("n", 1, MAX_N as i64)?.unwrap_or(1) as usize,
            max_tokens: max_tokens.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            sampling,
            stop: stop_strings(f)?,
            logprobs,
            stream,
            include_usage,
            routing,
            ignore_eos: f.bool("ignore_eos")?.unwrap_or(false),
            tokens_as_ids: f.bool("return_tokens_as_token_ids")?.unwrap_or(false),
        })
    }
}

/// Any integer that fits 64 bits: negative seeds are valid in OpenAI's API, and their bits are
/// as good a seed.
fn seed(f: &Fields) -> Result<Option<u64>, ApiError> {
    match f.get("seed") {
        None => Ok(None),
        Some(v) => match v.as_u64().or_else(|| v.as_i64().map(|s| s as u64)) {
            Some(s) => Ok(Some(s)),
            None => Err(wrong("seed", "a 64-bit integer", v)),
        },
    }
}

fn wrong_nested(name: &str, expect: &str) -> ApiError {
    ApiError::bad_field(name, format!("`{name}` must be {expect}"))
}

/// `stop`: a string or up to [`MAX_STOP`] strings, none empty.
fn stop_strings(f: &Fields) -> Result<Vec<String>, ApiError> {
    let list: Vec<(String, &Value)> = match f.get("stop") {
        None => return Ok(Vec::new()),
        Some(v @ Value::String(_)) => vec![("stop".into(), v)],
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP {
                return Err(ApiError::bad_field(
                    "stop",
                    format!(
                        "`stop` may hold at most {MAX_STOP} strings; got {}",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("stop[{i}]"), v))
                .collect()
        }
        Some(v) => return Err(wrong("stop", "a string or an array of strings", v)),
    };
    list.into_iter()
        .map(|(name, v)| match v {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::String(_) => Err(ApiError::bad_field(
                &name,
                format!("`{name}` must not be empty"),
            )),
            v => Err(wrong(&name, "a string", v)),
        })
        .collect()
}

/// Fields a client may rely on that this server cannot honour: refusing them by name beats
/// answering as if they had been applied.
fn refuse_unsupported(f: &Fields) -> Result<(), ApiError> {
    let unsupported = |name: &str, what: &str| {
        Err(ApiError::bad_field(
            name,
            format!("`{name}` {what} is not supported by this server"),
        ))
    };
    for name in ["presence_penalty", "frequency_penalty"] {
        if f.number(name, "a number", |_| true)?
            .is_some_and(|p| p != 0.0)
        {
            return unsupported(name, "other than 0");
        }
    }
    if f.get("logit_bias")
        .is_some_and(|v| v.as_object().is_none_or(|o| !o.is_empty()))
    {
        return unsupported("logit_bias", "with entries");
    }
    if f.bool("echo")? == Some(true) {
        return unsupported("echo", "set to true");
    }
    if f.int("best_of", 1, i64::MAX)?.is_some_and(|b| b > 1) {
        return unsupported("best_of", "above 1");
    }
    if f.str("suffix")?.is_some_and(|s| !s.is_empty()) {
        return unsupported("suffix", "(insertion)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info() -> ModelInfo {
        ModelInfo {
            id: "m".into(),
            moe_layers: vec![1],
            sampling: SamplingParams::default(),
            ..ModelInfo::default()
        }
    }

    fn parse(body: Value, endpoint: Endpoint) -> Result<GenParams, ApiError> {
        let map = body.as_object().unwrap().clone();
        GenParams::parse(&Fields(&map), &info(), endpoint)
    }

    fn param_of(body: Value, endpoint: Endpoint) -> String {
        let e = parse(body, endpoint).unwrap_err();
        assert_eq!(e.status.as_u16(), 400, "{e:?}");
        e.param.unwrap()
    }

    #[test]
    fn defaults_come_from_the_model() {
        let p = parse(json!({"seed": 7}), Endpoint::Chat).unwrap();
        assert_eq!(
            p.sampling,
            SamplingParams {
                seed: 7,
                ..SamplingParams::default()
            }
        );
        assert_eq!(
            (p.n, p.max_tokens, p.logprobs, p.stream),
            (1, None, None, false)
        );
        let p = parse(
            json!({"temperature": 0, "top_k": -1, "max_tokens": 5, "max_completion_tokens": 9,
                   "stop": "x", "n": 3.0, "logprobs": true, "top_logprobs": 2, "stream": true,
                   "stream_options": {"include_usage": true}, "frequency_penalty": 0,
                   "return_routed_experts": true, "unknown": [1]}),
            Endpoint::Chat,
        )
        .unwrap();
        assert_eq!(p.sampling.temperature, 0.0);
        assert_eq!(p.sampling.top_k, 0);
        assert_eq!((p.max_tokens, p.n, p.logprobs), (Some(9), 3, Some(2)));
        assert_eq!(p.stop, vec!["x".to_string()]);
        assert!(p.stream && p.include_usage && p.routing);
        let p = parse(json!({"logprobs": 3, "top_p": null}), Endpoint::Completions).unwrap();
        assert_eq!(p.logprobs, Some(3));
        let p = parse(json!({"seed": u64::MAX}), Endpoint::Chat).unwrap();
        assert_eq!(p.sampling.seed, u64::MAX);
        let p = parse(json!({"seed": -1}), Endpoint::Chat).unwrap();
        assert_eq!(p.sampling.seed, u64::MAX);
    }

    #[test]
    fn bad_fields_are_named() {
        use Endpoint::*;
        assert_eq!(param_of(json!({"temperature": "hot"}), Chat), "temperature");
        assert_eq!(param_of(json!({"temperature": -1}), Chat), "temperature");
        assert_eq!(param_of(json!({"top_p": 0}), Chat), "top_p");
        assert_eq!(param_of(json!({"n": 0}), Chat), "n");
        assert_eq!(param_of(json!({"seed": 1.5}), Chat), "seed");
        assert_eq!(param_of(json!({"n": 1000}), Chat), "n");
        assert_eq!(param_of(json!({"max_tokens": 0}), Chat), "max_tokens");
        assert_eq!(param_of(json!({"stop": ["a", 3]}), Chat), "stop[1]");
        assert_eq!(param_of(json!({"stop": ["a", ""]}), Chat), "stop[1]");
        assert_eq!(
            param_of(json!({"stop": ["a", "b", "c", "d", "e"]}), Chat),
            "stop"
        );
        assert_eq!(param_of(json!({"logprobs": 2}), Chat), "logprobs");
        assert_eq!(param_of(json!({"logprobs": true}), Completions), "logprobs");
        assert_eq!(param_of(json!({"top_logprobs": 3}), Chat), "top_logprobs");
        assert_eq!(
            param_of(json!({"logprobs": true, "top_logprobs": 21}), Chat),
            "top_logprobs"
        );
        assert_eq!(
            param_of(json!({"stream_options": {"include_usage": 1}}), Chat),
            "stream_options.include_usage"
        );
        assert_eq!(
            param_of(json!({"presence_penalty": 0.5}), Chat),
            "presence_penalty"
        );
        assert_eq!(
            param_of(json!({"logit_bias": {"1": 5}}), Chat),
            "logit_bias"
        );
        assert_eq!(param_of(json!({"echo": true}), Completions), "echo");
        let e = parse(json!({"temperature": "hot"}), Chat).unwrap_err();
        assert_eq!(e.message, "`temperature` must be a number; got a string");
    }

    #[test]
    fn routing_needs_moe_layers() {
        let map = json!({"return_routed_experts": true})
            .as_object()
            .unwrap()
            .clone();
        let dense = ModelInfo::default();
        let e = GenParams::parse(&Fields(&map), &dense, Endpoint::Chat).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("return_routed_experts"));
    }
}
