//! Every refusal, with its status and OpenAI-shaped body.

use serde_json::{json, Value};

use super::chat::{ask, r1_server};
use super::client::{read_until, Reply, TestServer};
use super::fake::{Script, CONTEXT, MODEL};

/// Checks the error shape and returns `(type, param, code)`.
fn error_of(reply: &Reply, status: u16) -> (String, Value, Value) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let v = reply.json();
    let e = &v["error"];
    assert!(!e["message"].as_str().unwrap().is_empty(), "{v}");
    (
        e["type"].as_str().unwrap().to_string(),
        e["param"].clone(),
        e["code"].clone(),
    )
}

#[test]
fn bad_json_and_bad_fields_are_400s_that_say_which() {
    let server = r1_server();
    let json_ct = [("Content-Type", "application/json")];
    let reply = server.send(
        "POST",
        "/v1/chat/completions",
        &json_ct,
        Some("{\"messages\": ["),
    );
    assert_eq!(error_of(&reply, 400).2, "invalid_json");
    let reply = server.send("POST", "/v1/chat/completions", &json_ct, Some("[1, 2]"));
    assert_eq!(error_of(&reply, 400).2, "invalid_json");

    let param = |body: Value| error_of(&server.post("/v1/chat/completions", &body), 400).1;
    assert_eq!(param(ask(json!({"temperature": "warm"}))), "temperature");
    assert_eq!(param(ask(json!({"n": 0}))), "n");
    assert_eq!(param(ask(json!({"stop": [1]}))), "stop[0]");
    let two =
        json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 7}]});
    assert_eq!(param(two), "messages[1].content");
    assert_eq!(param(json!({})), "messages");
    let reply = server.post("/v1/chat/completions", &ask(json!({"temperature": "warm"})));
    assert_eq!(
        reply.json()["error"]["message"],
        "`temperature` must be a number; got a string"
    );
    assert!(
        server.backend.seen().is_empty(),
        "nothing bad reaches the engine"
    );
}

#[test]
fn a_body_without_content_type_still_parses() {
    let server = r1_server();
    let body = ask(json!({})).to_string();
    let reply = server.send("POST", "/v1/chat/completions", &[], Some(&body));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = server.send(
        "POST",
        "/v1/chat/completions",
        &[("Content-Type", "text/plain")],
        Some(&body),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let server = r1_server();
    let long = "x".repeat(CONTEXT * 2);
    let body = json!({"messages": [{"role": "user", "content": long}]});
    let (_, param, code) = error_of(&server.post("/v1/chat/completions", &body), 400);
    assert_eq!(
        (param, code),
        (json!("messages"), json!("context_length_exceeded"))
    );
    let (_, param, _) = error_of(
        &server.post("/v1/completions", &json!({"prompt": long})),
        400,
    );
    assert_eq!(param, "prompt");
}

#[test]
fn an_api_key_guards_v1_but_not_health() {
    let server = TestServer::with_options(Script::Reply(Vec::new()), Some("sk-test"), 0);
    let body = ask(json!({"max_tokens": 1})).to_string();
    let reply = server.send("POST", "/v1/chat/completions", &[], Some(&body));
    assert_eq!(error_of(&reply, 401).2, "invalid_api_key");
    let wrong = [("Authorization", "Bearer sk-nope")];
    assert_eq!(server.send("GET", "/v1/models", &wrong, None).status, 401);
    let right = [("Authorization", "Bearer sk-test")];
    assert_eq!(
        server
            .send("POST", "/v1/chat/completions", &right, Some(&body))
            .status,
        200
    );
    assert_eq!(server.send("GET", "/v1/models", &right, None).status, 200);
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn unknown_models_paths_and_methods() {
    let server = r1_server();
    let reply = server.post("/v1/chat/completions", &ask(json!({"model": "gpt-4o"})));
    let (_, param, code) = error_of(&reply, 404);
    assert_eq!((param, code), (json!("model"), json!("model_not_found")));
    let (_, _, code) = error_of(&server.get("/v1/embeddings"), 404);
    assert_eq!(code, "unknown_url");
    let reply = server.get("/v1/chat/completions");
    error_of(&reply, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
}

#[test]
fn a_full_queue_is_a_503_with_retry_after() {
    let server = TestServer::with_options(Script::Hold, None, 1);
    let body = ask(json!({"stream": true})).to_string();
    let mut holder = server.open("POST", "/v1/chat/completions", &[], Some(&body));
    read_until(&mut holder, "\"role\":\"assistant\"");
    let reply = server.post("/v1/chat/completions", &ask(json!({})));
    let (kind, _, code) = error_of(&reply, 503);
    assert_eq!((kind.as_str(), code), ("server_busy", json!("server_busy")));
    assert_eq!(reply.header("retry-after"), Some("1"));
    // Validation still comes first: a bad request is told so, not told to retry.
    assert_eq!(
        server
            .post("/v1/chat/completions", &ask(json!({"n": -1})))
            .status,
        400
    );
    drop(holder);
}

#[test]
fn health_and_models() {
    let server = r1_server();
    assert_eq!(server.get("/health").json(), json!({"status": "ok"}));
    let v = server.get("/v1/models").json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], MODEL);
    assert_eq!(v["data"][0]["owned_by"], "thinkbench");
    assert_eq!(v["data"][0]["max_model_len"], CONTEXT);
}
