//! Streamed chat replies: chunk order, stop strings held back, failures, disconnects.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::chat::{ask, r1_server};
use super::client::{eventually, read_until, TestServer};
use super::fake::Script;

/// What a chunk is, for checking the order.
fn kind(chunk: &Value) -> &'static str {
    if chunk.get("error").is_some() {
        return "error";
    }
    if chunk.get("sglext").is_some() {
        return "sglext";
    }
    if chunk.get("usage").is_some() {
        return "usage";
    }
    let choice = &chunk["choices"][0];
    if !choice["finish_reason"].is_null() {
        return "finish";
    }
    let delta = &choice["delta"];
    if delta.get("role").is_some() {
        "role"
    } else if delta.get("reasoning_content").is_some() {
        "reasoning"
    } else if delta.get("content").is_some() {
        "content"
    } else {
        "empty"
    }
}

fn joined(chunks: &[Value], field: &str) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"][field].as_str())
        .collect()
}

#[test]
fn chunks_come_in_order_and_say_what_the_whole_reply_says() {
    let server = r1_server();
    let extra = json!({"stream": true, "stream_options": {"include_usage": true},
                       "return_routed_experts": true, "logprobs": true, "top_logprobs": 1});
    let reply = server.post("/v1/chat/completions", &ask(extra));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let chunks = reply.chunks();
    let mut kinds: Vec<&str> = chunks.iter().map(kind).collect();
    kinds.dedup();
    assert_eq!(
        kinds,
        vec!["role", "reasoning", "content", "finish", "sglext", "usage"]
    );
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );

    let whole = server
        .post(
            "/v1/chat/completions",
            &ask(json!({"return_routed_experts": true, "logprobs": true, "top_logprobs": 1})),
        )
        .json();
    let message = &whole["choices"][0]["message"];
    assert_eq!(
        joined(&chunks, "reasoning_content"),
        message["reasoning_content"].as_str().unwrap()
    );
    assert_eq!(
        joined(&chunks, "content")[..],
        message["content"].as_str().unwrap()[..]
    );
    let finish = chunks.iter().find(|c| kind(c) == "finish").unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let ext = chunks.iter().find(|c| kind(c) == "sglext").unwrap();
    assert_eq!(ext["choices"], json!([]));
    assert_eq!(ext["sglext"], whole["sglext"]);
    let usage = chunks.iter().find(|c| kind(c) == "usage").unwrap();
    assert_eq!(usage["usage"], whole["usage"]);
    // Every token's log-probabilities arrive once, in order, even those that show no text.
    let streamed: Vec<Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array())
        .flatten()
        .cloned()
        .collect();
    assert_eq!(
        Value::Array(streamed),
        whole["choices"][0]["logprobs"]["content"]
    );
}

#[test]
fn a_stop_string_split_across_tokens_is_never_sent() {
    let server = r1_server();
    let reply = server.post(
        "/v1/chat/completions",
        &ask(json!({"stream": true, "stop": ["is 4"]})),
    );
    let chunks = reply.chunks();
    assert_eq!(joined(&chunks, "content"), "It ");
    for c in &chunks {
        let text = c["choices"][0]["delta"]["content"].as_str().unwrap_or("");
        assert!(!text.contains('i') && !text.contains('4'), "{c}");
    }
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    // Held text that turns out not to be a stop string is sent after all.
    let reply = server.post(
        "/v1/chat/completions",
        &ask(json!({"stream": true, "stop": ["is 5", "4.!"]})),
    );
    assert_eq!(joined(&reply.chunks(), "content"), "It is 4.");
}

#[test]
fn several_choices_each_start_and_finish() {
    let server = r1_server();
    let chunks = server
        .post(
            "/v1/chat/completions",
            &ask(json!({"stream": true, "n": 2})),
        )
        .chunks();
    for index in 0..2 {
        let mine: Vec<&Value> = chunks
            .iter()
            .filter(|c| c["choices"][0]["index"] == index)
            .collect();
        assert_eq!(kind(mine[0]), "role");
        assert_eq!(kind(mine[mine.len() - 1]), "finish");
    }
}

#[test]
fn an_engine_failure_mid_stream_is_an_error_chunk_then_done() {
    let server = TestServer::start(Script::FailAfter(3));
    let reply = server.post("/v1/chat/completions", &ask(json!({"stream": true})));
    assert_eq!(reply.status, 200);
    let chunks = reply.chunks();
    let last = chunks.last().unwrap();
    assert_eq!(kind(last), "error");
    assert_eq!(last["error"]["message"], "the fake engine broke");
    // Not streamed, the same failure is a 500.
    let reply = server.post("/v1/chat/completions", &ask(json!({})));
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["error"]["type"], "server_error");
}

#[test]
fn a_client_that_hangs_up_cancels_its_generation_and_frees_its_place() {
    let server = TestServer::with_options(Script::Endless, None, 1);
    let body = ask(json!({"stream": true})).to_string();
    let mut conn = server.open("POST", "/v1/chat/completions", &[], Some(&body));
    read_until(&mut conn, "\"content\":\"a\"");
    let seen = server.backend.seen();
    assert!(!seen[0].cancel.load(Ordering::Acquire));
    drop(conn);
    eventually("the cancel flag", || seen[0].cancel.load(Ordering::Acquire));
    // Its queue place is free again (max_queue is 1).
    eventually("a free place", || {
        server
            .post("/v1/chat/completions", &ask(json!({"max_tokens": 2})))
            .status
            == 200
    });
}

#[test]
fn a_client_that_hangs_up_before_a_whole_reply_cancels_it_too() {
    let server = TestServer::with_options(Script::Hold, None, 1);
    let body = ask(json!({})).to_string();
    let conn = server.open("POST", "/v1/chat/completions", &[], Some(&body));
    eventually("the submission", || !server.backend.seen().is_empty());
    drop(conn);
    let seen = server.backend.seen();
    eventually("the cancel flag", || seen[0].cancel.load(Ordering::Acquire));
}
