//! `GET /health`, `GET /v1/models` and `GET /metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::output::unix_now;
use super::Shared;

pub(crate) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// OpenAI's model list, with vLLM's `max_model_len` (the context) and `root` (the folder), and
/// for a MoE model the shape of the routing `return_routed_experts` gives (`routing`: layers,
/// the layers that route, experts, top-k), so a client needs no config.json to read it.
pub(crate) async fn models(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let info = shared.backend.info();
    let mut entry = json!({
        "id": info.id,
        "object": "model",
        "created": unix_now(),
        "owned_by": "thinkbench",
        "root": info.dir.display().to_string(),
        "max_model_len": info.context,
    });
    if !info.moe_layers.is_empty() {
        entry["routing"] = json!({
            "model_type": info.model_type,
            "num_layers": info.num_layers,
            "moe_layers": info.moe_layers,
            "n_experts": info.n_experts,
            "top_k": info.top_k,
        });
    }
    Json(json!({"object": "list", "data": [entry]}))
}

/// `GET /metrics`: the engine's counters in Prometheus' text format (vLLM, SGLang and llama.cpp's
/// server all offer one), beside the requests this server has admitted and not yet answered.
pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let c = shared.backend.counters();
    let rows: [(&str, &str, &str, u64); 7] = [
        (
            "thinkbench_running_rows",
            "gauge",
            "Rows decoding now.",
            c.running_rows,
        ),
        (
            "thinkbench_waiting_requests",
            "gauge",
            "Requests waiting for room in the batch.",
            c.waiting,
        ),
        (
            "thinkbench_http_requests_in_flight",
            "gauge",
            "Requests admitted and not yet answered.",
            shared.admission.in_flight() as u64,
        ),
        (
            "thinkbench_requests_completed_total",
            "counter",
            "Requests the engine ended (finished, cancelled or failed).",
            c.completed,
        ),
        (
            "thinkbench_requests_cancelled_total",
            "counter",
            "Requests cancelled because their client went away.",
            c.cancelled,
        ),
        (
            "thinkbench_prompt_tokens_total",
            "counter",
            "Prompt tokens prefilled.",
            c.prompt_tokens,
        ),
        (
            "thinkbench_generated_tokens_total",
            "counter",
            "Tokens generated.",
            c.generated_tokens,
        ),
    ];
    let mut text = String::new();
    for (name, kind, help, value) in rows {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
