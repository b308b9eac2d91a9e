//! The remote backend against a scripted server on 127.0.0.1: each connection gets the bytes
//! (and pauses, and early closes) a test writes, so every server behaviour the issue names —
//! refusals, rate limits, cuts, malformed lines, routing that does not fit — is reproduced
//! exactly, and the requests the backend sent are kept for the test to read.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::*;
use crate::text::ChatMessage;
use crate::trace::Phase;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: Value,
}

enum Step {
    Send(Vec<u8>),
    /// Sends nothing until the test opens the gate (or a minute passes, so a broken test ends).
    Hold(Arc<Gate>),
}

#[derive(Default)]
struct Gate {
    open: AtomicBool,
    /// The server went on (the gate opened, or the minute passed).
    resumed: AtomicBool,
}

struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    /// Answers every connection with what `answer` makes of the request, then closes it.
    fn start(answer: impl Fn(&Seen, usize) -> Vec<Step> + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let Some(req) = read_request(&mut stream) else {
                    continue;
                };
                let n = {
                    let mut l = log.lock().unwrap();
                    l.push(req.clone());
                    l.len() - 1
                };
                for step in answer(&req, n) {
                    match step {
                        Step::Send(b) => {
                            if stream.write_all(&b).is_err() {
                                break;
                            }
                            let _ = stream.flush();
                        }
                        Step::Hold(gate) => {
                            for _ in 0..6000 {
                                if gate.open.load(std::sync::atomic::Ordering::SeqCst) {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            gate.resumed
                                .store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                }
            }
        });
        Self { url, seen }
    }

    fn posts(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.line.starts_with("POST"))
            .cloned()
            .collect()
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        if k.eq_ignore_ascii_case("content-length") {
            len = v.trim().parse().ok()?;
        }
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Seen {
        line: line.trim_end().to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

fn head(status: &str, content_type: &str, extra: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: close\r\n{extra}\r\n")
        .into_bytes()
}

fn json_reply(status: &str, v: &Value, extra: &str) -> Vec<Step> {
    let body = v.to_string();
    let mut b = head(
        status,
        "application/json",
        &format!("{extra}Content-Length: {}\r\n", body.len()),
    );
    b.extend_from_slice(body.as_bytes());
    vec![Step::Send(b)]
}

fn models(owned_by: &str, names: &[&str]) -> Vec<Step> {
    let data: Vec<Value> = names
        .iter()
        .map(|n| json!({"id": n, "object": "model", "owned_by": owned_by}))
        .collect();
    json_reply("200 OK", &json!({"object": "list", "data": data}), "")
}

fn sse_head() -> Step {
    Step::Send(head("200 OK", "text/event-stream", ""))
}

fn data(v: &Value) -> Step {
    Step::Send(format!("data: {v}\n\n").into_bytes())
}

fn done() -> Step {
    Step::Send(b"data: [DONE]\n\n".to_vec())
}

fn delta(reasoning: &str, content: &str, logprobs: Option<Value>) -> Value {
    let mut d = json!({});
    if !reasoning.is_empty() {
        d["reasoning_content"] = json!(reasoning);
    }
    if !content.is_empty() {
        d["content"] = json!(content);
    }
    let mut choice = json!({"index": 0, "delta": d, "finish_reason": null});
    if let Some(lp) = logprobs {
        choice["logprobs"] = json!({"content": lp});
    }
    json!({"id": "x", "object": "chat.completion.chunk", "choices": [choice]})
}

fn finish(reason: &str, usage: Value) -> Value {
    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}], "usage": usage})
}

/// A log-probability entry with alternatives, as OpenAI documents them.
fn lp(token: &str, logprob: f64, top: &[(&str, f64)]) -> Value {
    json!({
        "token": token, "logprob": logprob, "bytes": token.as_bytes(),
        "top_logprobs": top.iter().map(|(t, l)| json!({"token": t, "logprob": l, "bytes": t.as_bytes()})).collect::<Vec<_>>(),
    })
}

fn le_i32(ids: &[i32]) -> String {
    STANDARD.encode(
        ids.iter()
            .flat_map(|i| i.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
}

fn spec() -> GenSpec {
    GenSpec {
        job: 7,
        messages: vec![ChatMessage::new("user", "What is 2 + 2?")],
        continue_from: Vec::new(),
        sampling: SamplingParams::greedy(),
        max_new_tokens: 32,
        think_budget: None,
        top_logprobs: 2,
    }
}

/// A small DeepSeek-shaped config: layer 0 dense, layers 1-2 route 2 of 4 experts.
fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("config.json");
    std::fs::write(
        &p,
        json!({"model_type": "deepseek_v3", "num_hidden_layers": 3, "n_routed_experts": 4,
               "num_experts_per_tok": 2, "first_k_dense_replace": 1, "max_position_embeddings": 4096})
        .to_string(),
    )
    .unwrap();
    p
}

fn connect(
    url: &str,
    f: impl FnOnce(&mut RemoteConfig),
) -> (Result<Remote, String>, UnboundedReceiver<EngineEvent>) {
    let (tx, rx) = unbounded_channel();
    let mut config = RemoteConfig {
        url: url.to_string(),
        ..Default::default()
    };
    f(&mut config);
    (Remote::open(config, tx), rx)
}

fn drain(rx: &mut UnboundedReceiver<EngineEvent>) -> Vec<EngineEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn notes(events: &[EngineEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::Note { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn tokens(events: &[EngineEvent]) -> Vec<crate::trace::TokenRecord> {
    // The last revision wins; before it, the streamed tokens.
    let mut out = Vec::new();
    for e in events {
        match e {
            EngineEvent::Token { token, .. } => out.push(token.clone()),
            EngineEvent::Revised { tokens, .. } => out = tokens.clone(),
            _ => {}
        }
    }
    out
}

#[test]
fn an_sglang_stream_becomes_the_local_trace_shape() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    // Prompt of 3 tokens, 4 generated: 6 routing rows × 3 layers × top-2. Dense layer 0 is -1;
    // token 1's layer 2 has a padding id (-1) and one out of range (9).
    #[rustfmt::skip]
    let rows: Vec<i32> = vec![
        -1, -1, 0, 1, 2, 3, // prompt 0
        -1, -1, 1, 2, 3, 0, // prompt 1
        -1, -1, 2, 3, 0, 1, // prompt 2
        -1, -1, 3, 0, 1, 2, // generated 0 ("Two")
        -1, -1, 0, 2, -1, 9, // generated 1 (" plus")
        -1, -1, 1, 3, 0, 2, // generated 2 ("</think>")
    ];
    let routing = le_i32(&rows);
    let server = Scripted::start(move |req, _| {
        if req.line.starts_with("GET /v1/models") {
            return models("sglang", &["deepseek-r1"]);
        }
        vec![
            sse_head(),
            data(&delta(
                "Two",
                "",
                Some(json!([lp("Two", -0.1, &[("Two", -0.1), ("Four", -2.5)])])),
            )),
            data(&delta(
                " plus",
                "",
                Some(json!([lp(" plus", -0.2, &[(" plus", -0.2)])])),
            )),
            // The reasoning parser swallowed the closing tag: an entry with no text of its own.
            data(&delta("", "", Some(json!([lp("</think>", -0.05, &[])])))),
            data(&delta(
                "",
                "4",
                Some(json!([lp("4", -0.01, &[("4", -0.01), ("5", -5.0)])])),
            )),
            data(&finish(
                "stop",
                json!({"prompt_tokens": 3, "completion_tokens": 4,
                "completion_tokens_details": {"reasoning_tokens": 3}}),
            )),
            data(&json!({"choices": [], "sglext": {"routed_experts": routing}})),
            done(),
        ]
    });
    let (remote, mut rx) = connect(&server.url, |c| c.config = Some(config.clone()));
    let mut remote = remote.unwrap();
    assert_eq!(remote.info().id, "deepseek-r1");
    assert_eq!(remote.info().moe_layers, vec![1, 2]);
    assert_eq!(remote.info().capabilities.no_routing, None);
    assert!(!remote.info().capabilities.routing_weights);
    let (reason, stats) = remote.generate(&spec(), &AtomicBool::new(false)).unwrap();
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(stats.reasoning_tokens, Some(3));
    let posts = server.posts();
    assert_eq!(posts.len(), 1);
    let body = &posts[0].body;
    assert_eq!(body["model"], "deepseek-r1");
    assert_eq!(body["logprobs"], true);
    assert_eq!(body["top_logprobs"], 2);
    assert_eq!(body["return_routed_experts"], true);
    assert_eq!(body["stream"], true);

    let events = drain(&mut rx);
    let t = tokens(&events);
    let texts: Vec<&str> = t.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["Two", " plus", "</think>", "4"]);
    let phases: Vec<Phase> = t.iter().map(|t| t.phase).collect();
    assert_eq!(
        phases,
        [Phase::Think, Phase::Think, Phase::Think, Phase::Answer]
    );
    assert!((t[0].logprob + 0.1).abs() < 1e-6);
    // Entropy over the two returned alternatives, by hand: -Σ p ln p.
    let (p1, p2) = ((-0.1f64).exp(), (-2.5f64).exp());
    let h = -(p1 * p1.ln() + p2 * p2.ln());
    assert!(
        (t[0].entropy as f64 - h).abs() < 1e-5,
        "{} vs {h}",
        t[0].entropy
    );
    // Routing: rows 3.. belong to the generated tokens; the last token has none.
    assert_eq!(t[0].routing.len(), 2);
    assert_eq!(
        (t[0].routing[0].layer, &t[0].routing[0].experts),
        (1, &vec![3, 0])
    );
    assert_eq!(
        (t[0].routing[1].layer, &t[0].routing[1].experts),
        (2, &vec![1, 2])
    );
    assert!(
        t[0].routing[0].weights.is_empty(),
        "SGLang sends no weights"
    );
    // Padding (-1) and an id beyond the 4 experts are missing, not expert 0.
    assert_eq!(t[1].routing[1].experts, Vec::<u32>::new());
    assert_eq!(t[2].routing[0].experts, vec![1, 3]);
    assert!(t[3].routing.is_empty());
    let prompt = events
        .iter()
        .rev()
        .find_map(|e| match e {
            EngineEvent::Revised {
                prompt: Some(p), ..
            } => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(prompt.len(), 3);
    assert_eq!(prompt[2].routing[1].experts, vec![0, 1]);
}

#[test]
fn a_refused_logprobs_request_is_sent_again_without_them() {
    let server = Scripted::start(|req, _| {
        if req.line.starts_with("GET") {
            return models("deepseek", &["deepseek-reasoner"]);
        }
        if req.body.get("logprobs").is_some() {
            // The DeepSeek reasoner's answer to log-probabilities.
            return json_reply(
                "400 Bad Request",
                &json!({"error": {"message": "deepseek-reasoner does not support the parameter `logprobs`", "type": "invalid_request_error"}}),
                "",
            );
        }
        vec![
            sse_head(),
            data(&delta("Adding.", "", None)),
            data(&delta("", "4", None)),
            data(&finish(
                "stop",
                json!({"prompt_tokens": 9, "completion_tokens": 2}),
            )),
            done(),
        ]
    });
    let (remote, mut rx) = connect(&server.url, |_| {});
    let mut remote = remote.unwrap();
    remote.generate(&spec(), &AtomicBool::new(false)).unwrap();
    let posts = server.posts();
    assert_eq!(posts.len(), 2);
    assert!(posts[1].body.get("logprobs").is_none());
    assert!(posts[1].body.get("top_logprobs").is_none());
    let events = drain(&mut rx);
    assert!(notes(&events)
        .iter()
        .any(|n| n.contains("refused `logprobs`")));
    let why = events.iter().rev().find_map(|e| match e {
        EngineEvent::Info(i) => i.capabilities.no_logprobs.clone(),
        _ => None,
    });
    assert!(why.unwrap().contains("refuses log-probabilities"));
    let t = tokens(&events);
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].phase, t[1].phase), (Phase::Think, Phase::Answer));
    assert!(t[0].logprob.is_nan());
    // The next request leaves them out from the start.
    remote.generate(&spec(), &AtomicBool::new(false)).unwrap();
    assert_eq!(server.posts().len(), 3);
}

#[test]
fn an_unreachable_server_is_said_and_tried_again() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let (remote, mut rx) = connect(&url, |_| {});
    let mut remote = remote.expect("the backend stays up");
    let events = drain(&mut rx);
    assert!(notes(&events)[0].contains(&format!("cannot reach {url}: connection refused")));
    assert!(matches!(events.last(), Some(EngineEvent::Ready(_))));
    let err = remote
        .generate(&spec(), &AtomicBool::new(false))
        .unwrap_err();
    assert!(err.starts_with(&format!("cannot reach {url}")), "{err}");
}

#[test]
fn http_errors_are_one_line_that_says_what_to_do() {
    let server = Scripted::start(|req, _| {
        if req.line.starts_with("GET") {
            return models("vllm", &["a", "b"]);
        }
        match req.body["model"].as_str() {
            Some("a") => json_reply(
                "401 Unauthorized",
                &json!({"error": {"message": "Incorrect API key provided"}}),
                "",
            ),
            _ => json_reply(
                "500 Internal Server Error",
                &json!({"object": "error", "message": "CUDA out of memory"}),
                "",
            ),
        }
    });
    std::env::set_var("THINKBENCH_TEST_REMOTE_KEY", "sk-test-123");
    let (remote, _rx) = connect(&server.url, |c| {
        c.api_key_env = Some("THINKBENCH_TEST_REMOTE_KEY".into())
    });
    let mut remote = remote.unwrap();
    let err = remote
        .generate(&spec(), &AtomicBool::new(false))
        .unwrap_err();
    assert!(
        err.contains("answered 401: Incorrect API key provided"),
        "{err}"
    );
    assert!(err.contains("--api-key-env"), "{err}");
    let auth = server.posts()[0]
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(auth.as_deref(), Some("Bearer sk-test-123"));
    let (remote, _rx) = connect(&server.url, |c| c.model = Some("b".into()));
    let err = remote
        .unwrap()
        .generate(&spec(), &AtomicBool::new(false))
        .unwrap_err();
    assert!(err.contains("answered 500: CUDA out of memory"), "{err}");
    // A model the server does not have: nothing to retry.
    let (remote, _rx) = connect(&server.url, |c| c.model = Some("r1".into()));
    let err = remote.err().unwrap();
    assert!(
        err.contains("--remote-model r1") && err.contains("(it serves: a, b)"),
        "{err}"
    );
    // A URL without its scheme.
    let (remote, _rx) = connect("localhost:8000/v1", |_| {});
    assert!(remote.err().unwrap().contains("with http:// or https://"));
    // A key variable that is not set.
    let (remote, _rx) = connect(&server.url, |c| {
        c.api_key_env = Some("THINKBENCH_NO_SUCH_VAR".into())
    });
    assert!(remote
        .err()
        .unwrap()
        .contains("THINKBENCH_NO_SUCH_VAR is not set"));
}

#[test]
fn a_rate_limit_with_a_short_retry_after_is_waited_out_once() {
    let server = Scripted::start(|req, n| {
        if req.line.starts_with("GET") {
            return models("vllm", &["m"]);
        }
        if n == 1 {
            return json_reply(
                "429 Too Many Requests",
                &json!({"error": {"message": "rate limit reached"}}),
                "Retry-After: 1\r\n",
            );
        }
        if n == 2 {
            return vec![
                sse_head(),
                data(&delta("", "ok", None)),
                data(&finish("stop", json!({}))),
                done(),
            ];
        }
        json_reply(
            "429 Too Many Requests",
            &json!({"error": {"message": "rate limit reached"}}),
            "Retry-After: 60\r\n",
        )
    });
    let (remote, mut rx) = connect(&server.url, |_| {});
    let mut remote = remote.unwrap();
    remote.generate(&spec(), &AtomicBool::new(false)).unwrap();
    assert!(notes(&drain(&mut rx))
        .iter()
        .any(|n| n.contains("trying again in 1 s")));
    // A long wait is not sat through: the user hears when to try.
    let err = remote
        .generate(&spec(), &AtomicBool::new(false))
        .unwrap_err();
    assert!(
        err.contains("429") && err.contains("retry after 60 s"),
        "{err}"
    );
}

#[test]
fn a_cut_stream_keeps_what_arrived_and_says_so() {
    let server = Scripted::start(|req, _| {
        if req.line.starts_with("GET") {
            return models("llamacpp", &["m"]);
        }
        vec![
            sse_head(),
            data(&delta("", "The answer", None)),
            Step::Send(b"data: {not json\n\n".to_vec()),
            data(&delta("", " is", None)),
            // The connection closes: no finish reason, no [DONE].
        ]
    });
    let (remote, mut rx) = connect(&server.url, |_| {});
    let mut remote = remote.unwrap();
    let err = remote
        .generate(&spec(), &AtomicBool::new(false))
        .unwrap_err();
    assert!(err.contains("cut after 2 tokens"), "{err}");
    let events = drain(&mut rx);
    assert!(notes(&events)
        .iter()
        .any(|n| n.contains("skipped a malformed line")));
    let text: String = tokens(&events).iter().map(|t| t.text.as_str()).collect();
    assert_eq!(text, "The answer is");
}

#[test]
fn a_server_that_ignores_logprobs_or_routing_is_declared() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let server = Scripted::start(|req, _| {
        if req.line.starts_with("GET") {
            return models("sglang", &["m"]);
        }
        vec![
            sse_head(),
            data(&delta("", "4", None)),
            data(&finish("stop", json!({}))),
            done(),
        ]
    });
    let (remote, mut rx) = connect(&server.url, |c| c.config = Some(config.clone()));
    let mut remote = remote.unwrap();
    remote.generate(&spec(), &AtomicBool::new(false)).unwrap();
    let info = drain(&mut rx)
        .into_iter()
        .rev()
        .find_map(|e| match e {
            EngineEvent::Info(i) => Some(i),
            _ => None,
        })
        .unwrap();
    assert!(info.capabilities.no_logprobs.unwrap().contains("ignored"));
    assert!(info
        .capabilities
        .no_routing
        .unwrap()
        .contains("--enable-return-routed-experts"));
}

#[test]
fn routing_that_does_not_fit_the_config_is_said_not_shown() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let server = Scripted::start(|req, _| {
        if req.line.starts_with("GET") {
            return models("sglang", &["m"]);
        }
        vec![
            sse_head(),
            data(&delta("", "4", Some(json!([lp("4", -0.01, &[])])))),
            data(&finish(
                "stop",
                json!({"prompt_tokens": 3, "completion_tokens": 1}),
            )),
            // 5 ids: not a whole number of tokens for 3 layers × top-2.
            data(&json!({"choices": [], "sglext": {"routed_experts": le_i32(&[1, 2, 3, 0, 1])}})),
            done(),
        ]
    });
    let (remote, mut rx) = connect(&server.url, |c| c.config = Some(config.clone()));
    remote
        .unwrap()
        .generate(&spec(), &AtomicBool::new(false))
        .unwrap();
    let events = drain(&mut rx);
    assert!(
        notes(&events).iter().any(|n| n.contains("5 expert ids")),
        "{:?}",
        notes(&events)
    );
    assert!(tokens(&events)[0].routing.is_empty());
}

#[test]
fn vllm_routing_comes_whole_in_a_numpy_array() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    // A .npy of int64 [tokens=3, layers=3, top_k=2] written by hand: prompt 2 + generated 2 - 1.
    let values: [i64; 18] = [-1, -1, 0, 1, 2, 3, -1, -1, 1, 2, 3, 0, -1, -1, 3, 2, 1, 0];
    let mut header = "{'descr': '<i8', 'fortran_order': False, 'shape': (3, 3, 2), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    for v in values {
        npy.extend_from_slice(&v.to_le_bytes());
    }
    let routed = STANDARD.encode(&npy);
    let server = Scripted::start(move |req, _| {
        if req.line.starts_with("GET") {
            return models("vllm", &["m"]);
        }
        assert_eq!(req.body["stream"], false);
        json_reply(
            "200 OK",
            &json!({"choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "reasoning": "Sum.", "content": "4"},
                "logprobs": {"content": [lp("Sum.", -0.3, &[]), lp("4", -0.02, &[])]},
                "routed_experts": routed}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 2}}),
            "",
        )
    });
    let (remote, mut rx) = connect(&server.url, |c| {
        c.config = Some(config.clone());
        c.routing_unstreamed = true;
    });
    let mut remote = remote.unwrap();
    assert_eq!(remote.info().capabilities.no_routing, None);
    remote.generate(&spec(), &AtomicBool::new(false)).unwrap();
    let t = tokens(&drain(&mut rx));
    assert_eq!((t[0].phase, t[1].phase), (Phase::Think, Phase::Answer));
    assert_eq!(t[0].routing[0].experts, vec![3, 2]);
    assert_eq!(t[0].routing[1].experts, vec![1, 0]);
    assert!(t[1].routing.is_empty());
}

#[test]
fn a_cancelled_reply_ends_while_the_server_is_silent() {
    let gate = Arc::new(Gate::default());
    let held = gate.clone();
    let server = Scripted::start(move |req, _| {
        if req.line.starts_with("GET") {
            return models("vllm", &["m"]);
        }
        vec![
            sse_head(),
            data(&delta("", "Thinking", None)),
            Step::Hold(held.clone()),
            data(&delta("", " more", None)),
            done(),
        ]
    });
    let (remote, mut rx) = connect(&server.url, |_| {});
    let mut remote = remote.unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let (reason, _) = remote.generate(&spec(), &cancel).unwrap();
    assert_eq!(reason, FinishReason::Cancelled);
    // It did not wait for the server's next line: the server is still holding it.
    assert!(!gate.resumed.load(std::sync::atomic::Ordering::SeqCst));
    gate.open.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(tokens(&drain(&mut rx)).len(), 1);
}

#[test]
fn the_end_of_sequence_marker_is_learned_and_kept_out_of_the_answer() {
    const EOS: &str = "<｜end▁of▁sentence｜>";
    let server = Scripted::start(|req, _| {
        if req.line.starts_with("GET") {
            return models("vllm", &["m"]);
        }
        vec![
            sse_head(),
            data(&delta(
                "",
                "81.",
                Some(json!([lp("81", -0.1, &[]), lp(".", -0.1, &[])])),
            )),
            // The server shows no text for its end-of-sequence token, but scores it.
            data(
                &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                "logprobs": {"content": [lp(EOS, -0.01, &[])]}}]}),
            ),
            done(),
        ]
    });
    let (remote, mut rx) = connect(&server.url, |_| {});
    let mut remote = remote.unwrap();
    remote.generate(&spec(), &AtomicBool::new(false)).unwrap();
    let events = drain(&mut rx);
    let info = remote.info().clone();
    assert_eq!(info.eos_ids, vec![crate::backend::stand_in_id(EOS)]);
    let mut m = crate::session::Message::new(crate::session::Role::Assistant, "");
    m.tokens = tokens(&events);
    assert_eq!(m.tokens.len(), 3, "the marker stays in the trace");
    assert_eq!(m.answer_text(&info), "81.");
}
