//! `/v1/completions`: raw prompts, raw text, legacy log-probabilities.

use serde_json::{json, Value};

use super::chat::r1_server;
use super::client::codec;
use super::fake::{logprob_at, r1_reply, MODEL};

#[test]
fn text_prompts_are_raw_and_the_reply_keeps_its_tags() {
    let server = r1_server();
    let v = server
        .post(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "2+2="}),
        )
        .json();
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    let choice = &v["choices"][0];
    assert_eq!(choice["text"], "\nLet me add.\n</think>\n\nIt is 4.");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(
        server.backend.seen()[0].prompt_ids,
        codec().encode_raw("2+2=").unwrap()
    );
    assert!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    let v = server
        .post(
            "/v1/completions",
            &json!({"prompt": [5, 6, 7], "max_tokens": 2}),
        )
        .json();
    assert_eq!(server.backend.seen()[1].prompt_ids, vec![5, 6, 7]);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 3);
}

#[test]
fn legacy_logprobs() {
    let server = r1_server();
    let v = server
        .post(
            "/v1/completions",
            &json!({"prompt": "x", "logprobs": 2, "max_tokens": 4}),
        )
        .json();
    let c = codec();
    let script = r1_reply(&c, "\nLet me add.\n", "\n\nIt is 4.");
    let lp = &v["choices"][0]["logprobs"];
    let tokens: Vec<String> = script[..4]
        .iter()
        .map(|(id, _)| c.token_text(*id))
        .collect();
    assert_eq!(lp["tokens"], json!(tokens));
    let want: Vec<f32> = (0..4).map(logprob_at).collect();
    assert_eq!(lp["token_logprobs"], json!(want));
    let mut offsets = Vec::new();
    let mut at = 0;
    for t in &tokens {
        offsets.push(at);
        at += t.chars().count();
    }
    assert_eq!(lp["text_offset"], json!(offsets));
    let top = lp["top_logprobs"][0].as_object().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[&tokens[0]], json!(logprob_at(0)));
}

#[test]
fn streamed_text_equals_the_whole_and_several_prompts_are_refused() {
    let server = r1_server();
    let body = json!({"prompt": "q", "stream": true, "logprobs": 0, "stop": "is 4",
                      "stream_options": {"include_usage": true}});
    let chunks = server.post("/v1/completions", &body).chunks();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "\nLet me add.\n</think>\n\nIt ");
    let tokens: usize = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["tokens"].as_array())
        .map(Vec::len)
        .sum();
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() as usize,
        tokens
    );
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(
        (finish["text"].as_str(), finish["finish_reason"].as_str()),
        (Some(""), Some("stop"))
    );

    let reply = server.post("/v1/completions", &json!({"prompt": ["a", "b"]}));
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["param"], "prompt");
}
