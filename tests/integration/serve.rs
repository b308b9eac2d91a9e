//! `thinkbench serve` on a loopback port, driven by a real HTTP client (ureq), with the built-in
//! model. The reference for every reply is `thinkbench generate --json` (and the library's
//! `generate` for sampled groups), whose numbers the parity tests check against transformers.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::*;

const MODEL: &str = "models/thinkbench-tiny";
const QUESTION: &str = "What is 17 + 25?";

pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Server {
    pub(crate) fn start(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_thinkbench"))
            .current_dir(repo())
            .args(["serve", "--port", "0", "--threads", "1"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start thinkbench serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .split("listening on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in the first line: {line:?}"))
            .to_string();
        assert!(base.starts_with("http://127.0.0.1:"), "{line}");
        assert!(line.contains("(model thinkbench-tiny)"), "{line}");
        Server { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` (JSON text, sent as is); the status, the headers' Retry-After and the body.
    fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> (u16, Option<String>, Value) {
        let mut req = agent()
            .post(&self.url(path))
            .header("Content-Type", "application/json");
        if let Some(k) = key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let mut resp = req.send(body).expect("the server answers");
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.body_mut().read_to_string().unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, retry, value)
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        let (status, _, v) = self.post_raw(path, &body.to_string(), None);
        assert_eq!(status, 200, "{v}");
        v
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut resp = agent().get(&self.url(path)).call().unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    }

    /// A streamed request: the response, headers read, body still to come.
    fn open_stream(&self, path: &str, body: &Value) -> ureq::http::Response<ureq::Body> {
        let resp = agent()
            .post(&self.url(path))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_str())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp
    }

    fn stream(&self, path: &str, body: &Value) -> Vec<Value> {
        let mut resp = self.open_stream(path, body);
        sse_events(resp.body_mut().as_reader())
    }

    /// One counter from `/metrics` (Prometheus text).
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// The `data:` payloads of an SSE body up to `[DONE]` (which must end it).
fn sse_events(body: impl Read) -> Vec<Value> {
    let mut events = Vec::new();
    for line in BufReader::new(body).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            assert!(line.is_empty() || line.starts_with(':'), "not SSE: {line}");
            continue;
        };
        if data == "[DONE]" {
            return events;
        }
        events.push(serde_json::from_str(data).unwrap());
    }
    panic!("the stream ended without [DONE]");
}

/// `thinkbench generate --json` for one chat message, greedy.
pub(crate) fn generate_json(question: &str, max_new: usize) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_thinkbench"))
        .current_dir(repo())
        .args([
            "generate",
            "--model",
            MODEL,
            "--chat",
            question,
            "--threads",
            "1",
        ])
        .args(["--temperature", "0", "--top-logprobs", "3", "--json"])
        .args(["--max-new-tokens", &max_new.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids_of(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

fn b64(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap())
        .unwrap()
}

/// What `generate --json` says the routing payload must be: one row per prompt token and per
/// generated token but the last, `layers` × `top_k` experts, -1 for layers without routing.
fn expected_routing(reference: &Value, layers: usize, top_k: usize) -> (Vec<i32>, Vec<f32>) {
    let generated = reference["generated"].as_array().unwrap();
    let tokens = reference["prompt"]
        .as_array()
        .unwrap()
        .iter()
        .chain(&generated[..generated.len() - 1]);
    let (mut experts, mut weights) = (Vec::new(), Vec::new());
    for t in tokens {
        let routing = t["routing"].as_array().cloned().unwrap_or_default();
        for layer in 0..layers {
            match routing.iter().find(|r| r["layer"] == layer) {
                Some(r) => {
                    for k in 0..top_k {
                        experts.push(r["experts"][k].as_i64().unwrap() as i32);
                        weights.push(r["weights"][k].as_f64().unwrap() as f32);
                    }
                }
                None => {
                    experts.extend(std::iter::repeat_n(-1, top_k));
                    weights.extend(std::iter::repeat_n(0.0, top_k));
                }
            }
        }
    }
    (experts, weights)
}

fn check_routing(sglext: &Value, reference: &Value, what: &str) {
    let (want_e, want_w) = expected_routing(reference, 4, 2);
    let got_e: Vec<i32> = b64(&sglext["routed_experts"])
        .chunks(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got_e, want_e, "{what}: routed_experts");
    let got_w: Vec<f32> = b64(&sglext["routed_weights"])
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got_w.len(), want_w.len(), "{what}: routed_weights");
    for (a, b) in got_w.iter().zip(&want_w) {
        assert!((a - b).abs() < 1e-5, "{what}: weight {a} against {b}");
    }
    assert_eq!(
        sglext["routed_experts_shape"],
        json!([want_e.len() / 8, 4, 2]),
        "{what}"
    );
}

/// The reference's text split as the server must split it: reasoning without the tags,
/// trimmed; the answer with its leading whitespace trimmed; end-of-sequence shows no text.
fn split_reference(reference: &Value) -> (String, String) {
    let generated = reference["generated"].as_array().unwrap();
    let shown = if reference["finish_reason"] == "stop" {
        &generated[..generated.len() - 1]
    } else {
        &generated[..]
    };
    let (mut think, mut answer) = (String::new(), String::new());
    for t in shown {
        let text = t["text"].as_str().unwrap();
        if t["phase"] == "think" {
            if text != "<think>" && text != "</think>" {
                think.push_str(text);
            }
        } else {
            answer.push_str(text);
        }
    }
    (think.trim().to_string(), answer.trim_start().to_string())
}

fn chat_body(question: &str, max_tokens: usize) -> Value {
    json!({
        "model": "thinkbench-tiny",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "logprobs": true,
        "top_logprobs": 3,
        "return_routed_experts": true,
    })
}

fn check_logprobs(items: &[Value], reference: &Value, tol: f64, what: &str) {
    let generated = reference["generated"].as_array().unwrap();
    assert_eq!(items.len(), generated.len(), "{what}: one entry per token");
    for (i, (got, want)) in items.iter().zip(generated).enumerate() {
        assert_eq!(got["id"], want["id"], "{what}: token {i}");
        let (a, b) = (
            got["logprob"].as_f64().unwrap(),
            want["logprob"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= tol,
            "{what}: token {i} logprob {a} against {b}"
        );
        let top_ids: Vec<&Value> = got["top_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| &t["id"])
            .collect();
        let want_ids: Vec<Value> = want["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].clone())
            .collect();
        assert_eq!(
            top_ids,
            want_ids.iter().collect::<Vec<_>>(),
            "{what}: token {i} top"
        );
    }
}

#[test]
fn greedy_replies_equal_generate_streamed_or_not() {
    let reference = generate_json(QUESTION, 48);
    let server = Server::start(&[], &[]);
    let body = chat_body(QUESTION, 48);

    let reply = server.post("/v1/chat/completions", &body);
    let choice = &reply["choices"][0];
    let items = choice["logprobs"]["content"].as_array().unwrap();
    check_logprobs(items, &reference, 1e-4, "chat");
    assert_eq!(choice["finish_reason"], reference["finish_reason"]);
    let (think, answer) = split_reference(&reference);
    assert_eq!(
        choice["message"]["reasoning_content"]
            .as_str()
            .unwrap_or(""),
        think
    );
    assert_eq!(choice["message"]["content"].as_str().unwrap_or(""), answer);
    let generated = reference["generated"].as_array().unwrap();
    let usage = &reply["usage"];
    assert_eq!(usage["completion_tokens"], generated.len());
    assert_eq!(
        usage["prompt_tokens"],
        reference["prompt"].as_array().unwrap().len()
    );
    let thinking = generated.iter().filter(|t| t["phase"] == "think").count();
    assert_eq!(
        usage["completion_tokens_details"]["reasoning_tokens"],
        thinking
    );
    check_routing(&reply["sglext"], &reference, "chat");

    // Streamed: the deltas add up to the same reply, then the finish, routing and usage chunks.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = server.stream("/v1/chat/completions", &streamed);
    let (mut think_s, mut answer_s, mut items_s) = (String::new(), String::new(), Vec::new());
    let mut finish = None;
    for e in &events {
        for c in e["choices"].as_array().unwrap() {
            let d = &c["delta"];
            think_s.push_str(d["reasoning_content"].as_str().unwrap_or(""));
            answer_s.push_str(d["content"].as_str().unwrap_or(""));
            if let Some(lp) = c["logprobs"]["content"].as_array() {
                items_s.extend(lp.iter().cloned());
            }
            if !c["finish_reason"].is_null() {
                finish = Some(c["finish_reason"].clone());
            }
        }
    }
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        (think_s.as_str(), answer_s.as_str()),
        (think.as_str(), answer.as_str())
    );
    check_logprobs(&items_s, &reference, 1e-4, "streamed chat");
    assert_eq!(finish.as_ref(), Some(&reference["finish_reason"]));
    let n = events.len();
    assert!(events[n - 2]["choices"].as_array().unwrap().is_empty());
    check_routing(&events[n - 2]["sglext"], &reference, "streamed chat");
    assert_eq!(events[n - 1]["usage"], reply["usage"]);

    // /v1/completions on the same prompt ids: the raw text, tags included.
    let prompt_ids = ids_of(&reference["prompt"]);
    let done = server.post(
        "/v1/completions",
        &json!({"prompt": prompt_ids, "max_tokens": 48, "temperature": 0, "logprobs": 3}),
    );
    let shown = if reference["finish_reason"] == "stop" {
        &generated[..generated.len() - 1]
    } else {
        &generated[..]
    };
    let raw: String = shown.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(done["choices"][0]["text"], raw);
    let lps = done["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap();
    for (got, want) in lps.iter().zip(generated) {
        assert!((got.as_f64().unwrap() - want["logprob"].as_f64().unwrap()).abs() < 1e-4);
    }
}

#[test]
fn groups_of_rows_and_stop_strings() {
    let server = Server::start(&[], &[]);
    // n rows from one prompt, seeded: each row as the library's decode loop draws it.
    let reply = server.post(
        "/v1/chat/completions",
        &json!({
            "messages": [{"role": "user", "content": QUESTION}],
            "n": 3, "max_tokens": 24, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
            "min_p": 0.0, "seed": 11, "logprobs": true,
        }),
    );
    let dir = repo().join(MODEL);
    let model =
        thinkbench::model::Model::load(&dir, thinkbench::model::DType::F32, tch::Device::Cpu)
            .unwrap();
    let codec = thinkbench::text::TextCodec::load(&dir).unwrap();
    let mut eos = codec.eos_ids().to_vec();
    eos.extend(model.config.eos_ids());
    let prompt = codec
        .encode_chat(&[thinkbench::text::ChatMessage::user(QUESTION)], true)
        .unwrap()
        .ids;
    let req = thinkbench::runtime::GenerateRequest {
        max_new_tokens: 24,
        sampling: thinkbench::runtime::SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: codec
                .generation_defaults()
                .repetition_penalty
                .map_or(1.0, |p| p as f32),
            seed: 11,
        },
        eos_ids: eos,
        n: 3,
        ..thinkbench::runtime::GenerateRequest::new(prompt)
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let want =
        thinkbench::runtime::generate(&model, Some(&codec), &req, &cancel, &mut |_| {}).unwrap();
    let choices = reply["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (r, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], r);
        let got: Vec<u64> = ids_of(&c["logprobs"]["content"]);
        let expect: Vec<u64> = want.completions[r]
            .ids()
            .iter()
            .map(|&i| i as u64)
            .collect();
        assert_eq!(got, expect, "row {r}");
    }

    // A stop string cuts the reply before it, streamed or not.
    let text = server.post(
        "/v1/completions",
        &json!({"prompt": "17 + 25 =", "max_tokens": 40, "temperature": 0, "ignore_eos": true}),
    )["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 8, "too short to cut: {text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = &text[..text.find(&stop).unwrap()];
    let body = json!({"prompt": "17 + 25 =", "max_tokens": 40, "temperature": 0,
                      "ignore_eos": true, "stop": [stop]});
    let stopped = server.post("/v1/completions", &body);
    assert_eq!(stopped["choices"][0]["text"], cut, "stop {stop:?}");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let pieces: String = server
        .stream("/v1/completions", &streamed)
        .iter()
        .flat_map(|e| e["choices"].as_array().unwrap().clone())
        .map(|c| c["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(pieces, cut, "streamed stop {stop:?}");
}

fn error_of(v: &Value) -> (&str, &Value, &Value) {
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    (e["type"].as_str().unwrap(), &e["param"], &e["code"])
}

#[test]
fn errors_come_in_openai_shape_with_their_status() {
    let server = Server::start(
        &["--api-key-env", "TB_TEST_KEY"],
        &[("TB_TEST_KEY", "sesame")],
    );
    let key = Some("sesame");
    let chat = |body: &str, key| server.post_raw("/v1/chat/completions", body, key);

    let (s, _, v) = chat(r#"{"messages": [{"role": "user", "content": "hi"}]}"#, None);
    assert_eq!((s, error_of(&v).2), (401, &json!("invalid_api_key")));
    let (s, _, _) = chat(
        r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
        Some("nope"),
    );
    assert_eq!(s, 401);
    assert_eq!(server.get("/health").0, 200, "health needs no key");

    let (s, _, v) = chat(r#"{"messages": [{"role": "user", "#, key);
    assert_eq!((s, error_of(&v).2), (400, &json!("invalid_json")));
    let (s, _, v) = chat(
        r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#,
        key,
    );
    assert_eq!((s, error_of(&v).1), (400, &json!("temperature")));
    let long = "7 ".repeat(2000);
    let (s, _, v) = chat(
        &json!({"messages": [{"role": "user", "content": long}]}).to_string(),
        key,
    );
    assert_eq!(
        (s, error_of(&v).2),
        (400, &json!("context_length_exceeded"))
    );
    let (s, _, v) = chat(
        r#"{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}"#,
        key,
    );
    assert_eq!((s, error_of(&v).2), (404, &json!("model_not_found")));
    let (s, _, v) = server.post_raw("/v1/embeddings", "{}", key);
    assert_eq!(s, 404, "{v}");
    error_of(&v);
    let (s, _, v) = chat(
        r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}"#,
        key,
    );
    assert_eq!(s, 200, "{v}");
}

#[test]
fn a_full_queue_answers_503_and_the_server_stays_up() {
    let server = Server::start(&["--max-queue", "1", "--max-batch", "4"], &[]);
    // A long request holds the one place in the queue while it streams...
    let long = json!({"prompt": "1 2 3", "max_tokens": 400, "temperature": 0, "n": 8,
                      "ignore_eos": true, "stream": true});
    let mut first = server.open_stream("/v1/completions", &long);
    let (s, retry, v) = server.post_raw(
        "/v1/completions",
        r#"{"prompt": "4 5", "max_tokens": 2}"#,
        None,
    );
    assert_eq!((s, error_of(&v).2), (503, &json!("server_busy")));
    assert!(
        retry.is_some_and(|r| r.parse::<u64>().is_ok()),
        "Retry-After"
    );
    let events = sse_events(first.body_mut().as_reader());
    assert!(!events.is_empty());
    // ...and once it is done, the next one gets in.
    let (s, _, v) = server.post_raw(
        "/v1/completions",
        r#"{"prompt": "4 5", "max_tokens": 2}"#,
        None,
    );
    assert_eq!(s, 200, "{v}");
}

#[test]
fn a_client_that_disconnects_cancels_its_generation() {
    let server = Server::start(&[], &[]);
    let body = json!({"prompt": "1 2 3", "max_tokens": 450, "temperature": 0, "n": 4,
                      "ignore_eos": true, "stream": true});
    let mut resp = server.open_stream("/v1/completions", &body);
    let mut lines = BufReader::new(resp.body_mut().as_reader()).lines();
    let mut data = 0;
    while data < 3 {
        if lines.next().unwrap().unwrap().starts_with("data: ") {
            data += 1;
        }
    }
    drop(lines);
    drop(resp);
    // The engine notices at its next step; wait (bounded) for it to say so.
    let until = Instant::now() + Duration::from_secs(60);
    while server.metric("thinkbench_requests_cancelled_total") < 1.0 {
        assert!(Instant::now() < until, "the generation was never cancelled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.metric("thinkbench_running_rows"), 0.0);
    assert!(server.metric("thinkbench_generated_tokens_total") < 4.0 * 450.0);
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn sixteen_concurrent_streams_each_equal_their_sequential_run() {
    let server = Server::start(&[], &[]);
    let body = |i: usize| {
        let mut b = chat_body(&format!("What is {i} + {}?", 3 * i + 1), 32);
        b["stream"] = json!(true);
        b["return_routed_experts"] = json!(false);
        b
    };
    let run = |i: usize| -> (Vec<u64>, [String; 2], Vec<f64>) {
        let (mut ids, mut text, mut lps) = (Vec::new(), [String::new(), String::new()], Vec::new());
        for e in server.stream("/v1/chat/completions", &body(i)) {
            for c in e["choices"].as_array().unwrap() {
                text[0].push_str(c["delta"]["reasoning_content"].as_str().unwrap_or(""));
                text[1].push_str(c["delta"]["content"].as_str().unwrap_or(""));
                for t in c["logprobs"]["content"].as_array().into_iter().flatten() {
                    ids.push(t["id"].as_u64().unwrap());
                    lps.push(t["logprob"].as_f64().unwrap());
                }
            }
        }
        (ids, text, lps)
    };
    let sequential: Vec<_> = (0..16).map(run).collect();
    let concurrent: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16).map(|i| s.spawn(move || run(i))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, b)) in concurrent.iter().zip(&sequential).enumerate() {
        assert_eq!(a.0, b.0, "request {i}: tokens");
        assert_eq!(a.1, b.1, "request {i}: text");
        assert!(!a.0.is_empty());
        for (x, y) in a.2.iter().zip(&b.2) {
            assert!((x - y).abs() < 1e-3, "request {i}: logprob {x} against {y}");
        }
    }
}
