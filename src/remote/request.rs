//! The chat-completion request for one job, and what to leave out of it when a server refuses
//! a field. Servers differ in what they accept: the DeepSeek reasoner and OpenAI's reasoning
//! models answer 400 to `logprobs`, OpenAI to fields it does not know (`top_k`), o-series models
//! to `max_tokens` (they want `max_completion_tokens`). The request drops what was refused and
//! goes again; the connection remembers, so the next request leaves it out from the start.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::backend::chat::GenSpec;

/// What this connection has learned the server takes.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    /// Fields the server refused (names as sent).
    pub refused: BTreeSet<&'static str>,
    /// Send the token limit as `max_completion_tokens` (OpenAI's reasoning models).
    pub max_completion_tokens: bool,
}

/// Optional fields, in the order they are given up when a 400 names none of them: the
/// probabilities first (the usual culprit), the routing next, then the sampling extensions.
pub const OPTIONAL: [&str; 8] = [
    "logprobs",
    "return_routed_experts",
    "top_k",
    "min_p",
    "repetition_penalty",
    "seed",
    "top_p",
    "temperature",
];

/// The most alternatives per token a request asks for: OpenAI's limit, which the other servers
/// accept too.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// How one request is asked.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub stream: bool,
    pub routing: bool,
    pub top_logprobs: usize,
}

pub fn body(model: &str, spec: &GenSpec, ask: Ask, accepted: &Accepted) -> Value {
    let mut b = Map::new();
    b.insert("model".into(), json!(model));
    b.insert(
        "messages".into(),
        Value::Array(
            spec.messages
                .iter()
                .map(|m| json!({"role": m.role, "content": m.content}))
                .collect(),
        ),
    );
    b.insert("stream".into(), json!(ask.stream));
    if ask.stream {
        // The usage (reasoning tokens, cached prompt tokens) comes in a last chunk.
        b.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let limit = if accepted.max_completion_tokens {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    b.insert(limit.into(), json!(spec.max_new_tokens));
    let s = &spec.sampling;
    let mut optional: Vec<(&'static str, Value)> = vec![
        ("temperature", json!(s.temperature)),
        ("top_p", json!(s.top_p)),
        ("seed", json!(s.seed)),
    ];
    // The extensions go only when they change something: OpenAI refuses fields it does not know.
    if s.top_k > 0 {
        optional.push(("top_k", json!(s.top_k)));
    }
    if s.min_p > 0.0 {
        optional.push(("min_p", json!(s.min_p)));
    }
    if s.repetition_penalty != 1.0 {
        optional.push(("repetition_penalty", json!(s.repetition_penalty)));
    }
    optional.push(("logprobs", json!(true)));
    if ask.routing {
        optional.push(("return_routed_experts", json!(true)));
    }
    for (k, v) in optional {
        if !accepted.refused.contains(k) {
            b.insert(k.into(), v);
        }
    }
    if b.contains_key("logprobs") {
        b.insert(
            "top_logprobs".into(),
            json!(ask.top_logprobs.min(MAX_TOP_LOGPROBS)),
        );
    }
    Value::Object(b)
}

/// What to change after a 400/422 refusal whose message is `message`: the field to leave out
/// (or the limit's name to switch), or `None` when nothing sent explains it.
pub fn give_up(body: &Value, message: &str, accepted: &mut Accepted) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    if m.contains("max_completion_tokens") && !accepted.max_completion_tokens {
        accepted.max_completion_tokens = true;
        return Some("max_tokens");
    }
    let sent = |k: &str| body.get(k).is_some();
    let named = OPTIONAL
        .iter()
        .copied()
        .find(|&k| sent(k) && (m.contains(k) || (k == "logprobs" && m.contains("logprob"))));
    // A refusal that names nothing we sent: the log-probabilities are the usual culprit.
    let field = named.or_else(|| sent("logprobs").then_some("logprobs"))?;
    accepted.refused.insert(field);
    Some(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::SamplingParams;
    use crate::text::ChatMessage;

    fn spec() -> GenSpec {
        GenSpec {
            job: 1,
            messages: vec![ChatMessage::new("user", "What is 2 + 2?")],
            continue_from: Vec::new(),
            sampling: SamplingParams::greedy(),
            max_new_tokens: 64,
            think_budget: None,
            top_logprobs: 40,
        }
    }

    const ASK: Ask = Ask {
        stream: true,
        routing: true,
        top_logprobs: 40,
    };

    #[test]
    fn a_request_asks_for_what_the_workbench_shows() {
        let b = body("r1", &spec(), ASK, &Accepted::default());
        assert_eq!(b["messages"][0]["content"], "What is 2 + 2?");
        assert_eq!(b["max_tokens"], 64);
        assert_eq!(b["logprobs"], true);
        assert_eq!(b["top_logprobs"], 20, "OpenAI's cap");
        assert_eq!(b["return_routed_experts"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        // Greedy: the neutral extensions stay out.
        assert!(b.get("top_k").is_none() && b.get("min_p").is_none());
        assert!(b.get("repetition_penalty").is_none());
    }

    #[test]
    fn refusals_drop_the_named_field_or_else_the_logprobs() {
        let mut acc = Accepted::default();
        let b = body("r1", &spec(), ASK, &acc);
        // OpenAI's wording for a field it does not know.
        let named = give_up(
            &b,
            "Unrecognized request argument supplied: return_routed_experts",
            &mut acc,
        );
        assert_eq!(named, Some("return_routed_experts"));
        let b = body("r1", &spec(), ASK, &acc);
        assert!(b.get("return_routed_experts").is_none());
        // A refusal that names nothing.
        assert_eq!(give_up(&b, "invalid request", &mut acc), Some("logprobs"));
        let b = body("r1", &spec(), ASK, &acc);
        assert!(b.get("logprobs").is_none() && b.get("top_logprobs").is_none());
        // Nothing left to blame.
        assert_eq!(give_up(&b, "invalid request", &mut acc), None);
        // o-series: the limit's name.
        let mut acc = Accepted::default();
        let b = body("o3", &spec(), ASK, &acc);
        let m = "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.";
        assert_eq!(give_up(&b, m, &mut acc), Some("max_tokens"));
        let b = body("o3", &spec(), ASK, &acc);
        assert_eq!(b["max_completion_tokens"], 64);
        assert!(b.get("max_tokens").is_none());
    }
}
