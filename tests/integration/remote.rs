//! `--remote` against a real server: `thinkbench serve` on a loopback port with the built-in
//! model. A greedy reply read through the remote backend must equal the local trace — the same
//! tokens and alternatives, log-probabilities within 1e-4, the same experts with the same gate
//! weights — except where the protocol differs by design: a server sends no routing for the
//! last generated token (it never went through the model).

use std::process::Command;

use serde_json::Value;

use super::serve::{generate_json, Server};
use crate::common::*;

const QUESTION: &str = "What is 17 + 25?";

fn thinkbench(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_thinkbench"))
        .current_dir(repo())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn experts(token: &Value) -> Vec<(u64, Vec<u64>, Vec<f64>)> {
    token["routing"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let nums = |k: &str| -> Vec<Value> { r[k].as_array().unwrap().clone() };
                    (
                        r["layer"].as_u64().unwrap(),
                        nums("experts")
                            .iter()
                            .map(|e| e.as_u64().unwrap())
                            .collect(),
                        nums("weights")
                            .iter()
                            .map(|w| w.as_f64().unwrap())
                            .collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_greedy_remote_trace_equals_the_local_one() {
    let server = Server::start(&[], &[]);
    let url = format!("{}/v1", server.base);
    let out = thinkbench(
        &[
            "generate",
            "--remote",
            &url,
            "--chat",
            QUESTION,
            "--temperature",
            "0",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("end▁of▁sentence"),
        "the marker is not prose: {text}"
    );
    let out = thinkbench(
        &[
            "generate",
            "--remote",
            &url,
            "--chat",
            QUESTION,
            "--temperature",
            "0",
            "--top-logprobs",
            "3",
            "--max-new-tokens",
            "96",
            "--json",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let remote: Value = serde_json::from_slice(&out.stdout).unwrap();
    let local = generate_json(QUESTION, 96);
    assert_eq!(remote["model"]["server"], "thinkbench");
    assert_eq!(remote["capabilities"]["token_ids"], true);
    assert_eq!(remote["capabilities"]["routing_weights"], true);
    assert_eq!(remote["finish_reason"], local["finish_reason"]);
    let (r, l) = (
        remote["generated"].as_array().unwrap(),
        local["generated"].as_array().unwrap(),
    );
    assert_eq!(r.len(), l.len());
    assert!(r.len() > 10);
    for (i, (a, b)) in r.iter().zip(l).enumerate() {
        assert_eq!(a["id"], b["id"], "token {i}");
        assert_eq!(a["text"], b["text"], "token {i}");
        assert_eq!(a["phase"], b["phase"], "token {i}");
        let d = (a["logprob"].as_f64().unwrap() - b["logprob"].as_f64().unwrap()).abs();
        assert!(d < 1e-4, "token {i}: logprob differs by {d}");
        let ids = |t: &Value| -> Vec<u64> {
            t["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[0].as_u64().unwrap())
                .collect()
        };
        assert_eq!(ids(a), ids(b), "token {i}: alternatives");
        if i + 1 < r.len() {
            let (ea, eb) = (experts(a), experts(b));
            assert_eq!(
                ea.len(),
                3,
                "token {i}: the built-in model routes in 3 layers"
            );
            for ((la, xa, wa), (lb, xb, wb)) in ea.iter().zip(&eb) {
                assert_eq!((la, xa), (lb, xb), "token {i}");
                for (p, q) in wa.iter().zip(wb) {
                    assert!((p - q).abs() < 1e-5, "token {i}: gate weight {p} vs {q}");
                }
            }
        } else {
            assert!(experts(a).is_empty(), "the last token has no routing row");
        }
    }
    // The prompt: as many tokens as the local template renders, each routed the same.
    let (rp, lp) = (
        remote["prompt"].as_array().unwrap(),
        local["prompt"].as_array().unwrap(),
    );
    assert_eq!(rp.len(), lp.len());
    for (a, b) in rp.iter().zip(lp) {
        let strip = |v: Vec<(u64, Vec<u64>, Vec<f64>)>| -> Vec<(u64, Vec<u64>)> {
            v.into_iter().map(|(l, e, _)| (l, e)).collect()
        };
        assert_eq!(strip(experts(a)), strip(experts(b)));
    }
}

#[test]
fn a_recorded_remote_session_names_the_server_never_the_key() {
    const KEY: &str = "sk-thinkbench-test-7c1e";
    let server = Server::start(&["--api-key-env", "TB_SERVE_KEY"], &[("TB_SERVE_KEY", KEY)]);
    let url = format!("{}/v1", server.base);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("remote.json");
    let file_s = file.to_str().unwrap();
    // The wrong key: one clear line.
    let out = thinkbench(
        &[
            "record",
            "--remote",
            &url,
            "--api-key-env",
            "TB_CLIENT_KEY",
            "--out",
            file_s,
            "What is 2 + 3?",
        ],
        &[("TB_CLIENT_KEY", "sk-wrong")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("401") && err.contains("--api-key-env"),
        "{err}"
    );
    let out = thinkbench(
        &[
            "record",
            "--remote",
            &url,
            "--api-key-env",
            "TB_CLIENT_KEY",
            "--out",
            file_s,
            "--temperature",
            "0",
            "What is 2 + 3?",
            "What is 40 + 2?",
        ],
        &[("TB_CLIENT_KEY", KEY)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(KEY), "the key must never be saved");
    let session: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(session["model"]["remote"]["url"], url.as_str());
    assert_eq!(session["model"]["remote"]["model"], "thinkbench-tiny");
    // Reopened without the server: the trace is all there.
    let s = thinkbench::session::Session::load(&file).unwrap();
    let replies: Vec<_> = s
        .conversation
        .thread()
        .iter()
        .map(|&n| &s.conversation.nodes[n].message)
        .filter(|m| m.role == thinkbench::session::Role::Assistant)
        .collect();
    assert_eq!(replies.len(), 2);
    let model = s.model.clone().unwrap();
    for m in replies {
        assert!(m.error.is_none(), "{:?}", m.error);
        assert!(m.tokens.len() > 5);
        assert!(m.tokens[0].routing.len() == 3, "routing came back");
        assert!(!m.answer_text(&model).contains("end▁of▁sentence"));
        assert!(!m.answer_text(&model).is_empty());
    }
}
