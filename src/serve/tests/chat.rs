//! Non-streamed chat replies: reasoning split, usage, routing, log-probabilities, stop strings.

use serde_json::{json, Value};

use super::client::{codec, TestServer};
use super::fake::{
    experts_at, logprob_at, r1_reply, Script, CONTEXT, LAYERS, MODEL, MOE_LAYERS, TOP_K,
};
use crate::serve::routing::tests::{decode_f32, decode_i32};
use crate::text::ChatMessage;
use crate::trace::Phase;

pub(super) fn r1_server() -> TestServer {
    let c = codec();
    TestServer::start(Script::Reply(r1_reply(
        &c,
        "\nLet me add.\n",
        "\n\nIt is 4.",
    )))
}

pub(super) fn ask(extra: Value) -> Value {
    let mut body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "What is 2+2?"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[test]
fn reasoning_is_split_from_the_answer_and_counted() {
    let server = r1_server();
    let reply = server.post("/v1/chat/completions", &ask(json!({"temperature": 0})));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v = reply.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["reasoning_content"], "Let me add.");
    assert_eq!(choice["message"]["content"], "It is 4.");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["logprobs"], Value::Null);
    assert!(v.get("sglext").is_none());

    // The prompt is the template's rendering; the budget is what the context leaves.
    let seen = &server.backend.seen()[0];
    let want = codec()
        .encode_chat(&[ChatMessage::user("What is 2+2?")], true)
        .unwrap();
    assert_eq!(seen.prompt_ids, want.ids);
    assert_eq!(seen.max_new_tokens, CONTEXT - want.ids.len());
    assert_eq!(seen.sampling.temperature, 0.0);

    let script = r1_reply(&codec(), "\nLet me add.\n", "\n\nIt is 4.");
    let thinking = script.iter().filter(|(_, p)| *p == Phase::Think).count();
    assert_eq!(
        v["usage"],
        json!({
            "prompt_tokens": want.ids.len(),
            "completion_tokens": script.len(),
            "total_tokens": want.ids.len() + script.len(),
            "completion_tokens_details": {"reasoning_tokens": thinking},
        })
    );
}

#[test]
fn max_tokens_cuts_with_length_and_template_kwargs_reach_the_template() {
    let server = r1_server();
    let reply = server.post(
        "/v1/chat/completions",
        &ask(json!({"max_tokens": 5, "chat_template_kwargs": {"bos_token": "[B]"}})),
    );
    let v = reply.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let c = codec();
    let script = r1_reply(&c, "\nLet me add.\n", "\n\nIt is 4.");
    let first5: String = script[..5]
        .iter()
        .map(|(id, _)| c.token_text(*id))
        .collect();
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        first5.trim()
    );
    assert_eq!(v["choices"][0]["message"]["content"], "");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let seen = &server.backend.seen()[0];
    assert_eq!(seen.max_new_tokens, 5);
    let extra = json!({"bos_token": "[B]"}).as_object().unwrap().clone();
    let msgs = [ChatMessage::user("What is 2+2?")];
    assert_eq!(
        seen.prompt_ids,
        codec().encode_chat_with(&msgs, true, &extra).unwrap().ids
    );
}

#[test]
fn routed_experts_cover_the_prompt_and_all_tokens_but_the_last() {
    let server = r1_server();
    let v = server
        .post(
            "/v1/chat/completions",
            &ask(json!({"return_routed_experts": true})),
        )
        .json();
    let prompt_len = server.backend.seen()[0].prompt_ids.len();
    let generated = v["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    let tokens = prompt_len + generated - 1;
    let ext = &v["sglext"];
    assert_eq!(ext["routed_experts_shape"], json!([tokens, LAYERS, TOP_K]));
    let (mut experts, mut weights) = (Vec::new(), Vec::new());
    for pos in 0..tokens {
        for layer in 0..LAYERS {
            if MOE_LAYERS.contains(&layer) {
                let (e, w) = experts_at(pos, layer);
                experts.extend(e.iter().map(|&x| x as i32));
                weights.extend(w);
            } else {
                experts.extend([-1, -1]);
                weights.extend([0.0, 0.0]);
            }
        }
    }
    assert_eq!(decode_i32(ext["routed_experts"].as_str().unwrap()), experts);
    assert_eq!(decode_f32(ext["routed_weights"].as_str().unwrap()), weights);
    assert!(ext.get("choices").is_none());
}

#[test]
fn n_rows_are_choices_with_their_own_routing() {
    let server = r1_server();
    let v = server
        .post(
            "/v1/chat/completions",
            &ask(json!({"n": 3, "return_routed_experts": true, "seed": 5})),
        )
        .json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["content"], "It is 4.");
    }
    let per_row = r1_reply(&codec(), "\nLet me add.\n", "\n\nIt is 4.").len();
    assert_eq!(v["usage"]["completion_tokens"], 3 * per_row);
    let ext = &v["sglext"];
    assert_eq!(ext["choices"].as_array().unwrap().len(), 3);
    assert_eq!(ext["choices"][0]["routed_experts"], ext["routed_experts"]);
    let seen = &server.backend.seen()[0];
    assert_eq!((seen.n, seen.sampling.seed), (3, 5));
}

#[test]
fn logprobs_have_openai_shape_with_ids() {
    let server = r1_server();
    let v = server
        .post(
            "/v1/chat/completions",
            &ask(json!({"logprobs": true, "top_logprobs": 2})),
        )
        .json();
    assert_eq!(server.backend.seen()[0].top_logprobs, 2);
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    let script = r1_reply(&codec(), "\nLet me add.\n", "\n\nIt is 4.");
    assert_eq!(content.len(), script.len());
    let c = codec();
    for (i, (entry, (id, _))) in content.iter().zip(&script).enumerate() {
        let text = c.token_text(*id);
        assert_eq!(entry["token"], text.as_str());
        assert_eq!(entry["id"], *id);
        assert_eq!(entry["bytes"], json!(text.as_bytes()));
        assert_eq!(entry["logprob"].as_f64().unwrap() as f32, logprob_at(i));
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[1]["id"], id + 1);
        assert_eq!(top[1]["token"], c.token_text(id + 1).as_str());
    }
    // vLLM's spelling of tokens as ids.
    let v = server
        .post(
            "/v1/chat/completions",
            &ask(json!({"logprobs": true, "return_tokens_as_token_ids": true})),
        )
        .json();
    let first = &v["choices"][0]["logprobs"]["content"][0];
    assert_eq!(first["token"], format!("token_id:{}", script[0].0));
    assert_eq!(first["top_logprobs"], json!([]));
}

#[test]
fn stop_strings_are_cut_out() {
    let server = r1_server();
    let v = server
        .post("/v1/chat/completions", &ask(json!({"stop": ["is 4"]})))
        .json();
    assert_eq!(v["choices"][0]["message"]["content"], "It ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        server.backend.seen()[0].stop_strings,
        vec!["is 4".to_string()]
    );
    // A stop inside the reasoning ends the reply there.
    let v = server
        .post("/v1/chat/completions", &ask(json!({"stop": "add"})))
        .json();
    assert_eq!(v["choices"][0]["message"]["reasoning_content"], "Let me");
    assert_eq!(v["choices"][0]["message"]["content"], "");
}
