//! Problems asked inside a conversation: the earlier question/answer turns that come before one.
//!
//! The workbench sends a follow-up question with the whole thread before it, each earlier reply
//! reduced to its answer: R1's template drops earlier reasoning, and so does the workbench
//! (`session::Message::answer_text`). A model trained on single-turn prompts only has never seen
//! that context and fails every follow-up, so SFT prepends 0..=N earlier turns of other problems
//! (the loss stays on the last reply), `eval --turns` asks held-out problems as the k-th
//! question of a conversation, and GRPO can train on questions asked late in one
//! (`data.earlier_turns`).

use std::ops::RangeInclusive;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::data::Sampler;
use super::task::{content_hash, Example, Split, Task};
use crate::text::ChatMessage;

/// An earlier turn of a conversation as a later question's prompt holds it: the question, and
/// the reply reduced to its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EarlierTurn {
    pub prompt: String,
    pub reply: String,
}

impl From<&Example> for EarlierTurn {
    /// A problem answered correctly, as a later turn sees it (the answer, no reasoning).
    fn from(e: &Example) -> Self {
        EarlierTurn {
            prompt: e.prompt.clone(),
            reply: e.final_answer(),
        }
    }
}

/// Earlier problems as turns with their correct answers.
pub fn answered(earlier: &[Example]) -> Vec<EarlierTurn> {
    earlier.iter().map(EarlierTurn::from).collect()
}

/// The chat messages for `question` asked after `earlier`: each earlier question as the user
/// asked it, then its reply, then the new question.
pub fn messages(earlier: &[EarlierTurn], question: &str) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(2 * earlier.len() + 1);
    for e in earlier {
        out.push(ChatMessage::user(e.prompt.clone()));
        out.push(ChatMessage::assistant(e.reply.clone()));
    }
    out.push(ChatMessage::user(question.to_string()));
    out
}

/// The earlier turns of training step `step`: for each of its `n` sequences, a count drawn from
/// `counts` of training-split problems at levels drawn as the trained ones are. A stream of its
/// own (seed, step), so the trained problems of a step are the same with or without
/// conversations, and a resumed run draws the same turns. Training-split only: a held-out
/// problem is never trained on, in any turn.
pub fn training_turns(
    sampler: &Sampler,
    step: u64,
    n: usize,
    counts: RangeInclusive<u32>,
) -> Vec<Vec<Example>> {
    let mut rng = StdRng::seed_from_u64(content_hash(&[sampler.seed, 0xC0_4E75, step]));
    (0..n)
        .map(|_| {
            let k = rng.random_range(counts.clone());
            (0..k)
                .map(|_| {
                    let level = sampler.level(rng.random());
                    sampler.task.sample(&mut rng, level, Split::Train)
                })
                .collect()
        })
        .collect()
}

/// The `count` earlier turns of evaluation conversation `i`, asked before `target`: other
/// problems of `split` at `levels` (cycled from a seeded offset), from a stream of their own, so
/// that the evaluated problems are those of a single-turn evaluation and turn k's history is a
/// prefix of turn k+1's. The target itself is never among them (its answer would be in view).
pub fn eval_turns(
    task: &dyn Task,
    seed: u64,
    i: usize,
    count: usize,
    levels: &[u32],
    split: Split,
    target: &Example,
) -> Vec<Example> {
    let mut rng = StdRng::seed_from_u64(content_hash(&[seed, 0x7E2A, i as u64]));
    let offset = rng.random_range(0..levels.len());
    (0..count)
        .map(|j| loop {
            let e = task.sample(&mut rng, levels[(offset + j) % levels.len()], split);
            // The teacher's trace is a function of the operation and operands alone.
            if e.reasoning != target.reasoning {
                break e;
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::task::arithmetic::{split_of_problem, Arithmetic, Op};

    /// The split of a problem read back from its printed prompt (independent of the sampler).
    fn split_of_prompt(prompt: &str) -> Split {
        let body: String = prompt
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+' || *c == '-' || *c == ' ')
            .collect();
        let parts: Vec<&str> = body.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "{prompt}");
        let op = if parts[1] == "+" { Op::Add } else { Op::Sub };
        split_of_problem(op, parts[0].parse().unwrap(), parts[2].parse().unwrap())
    }

    #[test]
    fn training_turns_are_all_training_problems_and_vary_in_count() {
        let s = Sampler::new(&Arithmetic, &[1, 2, 3, 4, 5, 6], None, 7);
        let mut counts = [0usize; 4];
        for step in 0..40 {
            for turns in training_turns(&s, step, 32, 0..=3) {
                counts[turns.len()] += 1;
                for e in &turns {
                    assert_eq!(split_of_prompt(&e.prompt), Split::Train, "{}", e.prompt);
                    assert!((1..=6).contains(&e.level));
                }
            }
            // The trained problems of every step stay training problems too.
            for e in s.step(step, 32) {
                assert_eq!(split_of_prompt(&e.prompt), Split::Train);
            }
        }
        // 1280 sequences, 0..=3 earlier turns each, drawn evenly: every count shows up often.
        assert!(counts.iter().all(|&c| c > 250), "{counts:?}");
        assert_eq!(
            training_turns(&s, 5, 8, 0..=3),
            training_turns(&s, 5, 8, 0..=3)
        );
        assert!(training_turns(&s, 5, 8, 0..=0).iter().all(Vec::is_empty));
        let late = training_turns(&s, 5, 64, 4..=6);
        assert!(late.iter().all(|t| (4..=6).contains(&t.len())));
        assert!((4..=6).all(|k| late.iter().any(|t| t.len() == k)));
    }

    #[test]
    fn eval_turns_are_held_out_and_nest() {
        let mut rng = StdRng::seed_from_u64(3);
        for i in 0..50 {
            let target = Arithmetic.sample(&mut rng, 1, Split::HeldOut);
            let three = eval_turns(&Arithmetic, 0, i, 3, &[1, 1, 2], Split::HeldOut, &target);
            assert_eq!(three.len(), 3);
            for e in &three {
                assert_eq!(split_of_prompt(&e.prompt), Split::HeldOut, "{}", e.prompt);
                assert_ne!(
                    e.reasoning, target.reasoning,
                    "the target is not its own history"
                );
            }
            let one = eval_turns(&Arithmetic, 0, i, 1, &[1, 1, 2], Split::HeldOut, &target);
            assert_eq!(
                one[..],
                three[..1],
                "turn 2's history is a prefix of turn 3's"
            );
        }
    }

    #[test]
    fn messages_alternate_and_hold_only_answers() {
        let ex = |p: &str, a: &str| Example {
            level: 1,
            prompt: p.into(),
            answer: a.into(),
            reasoning: "1+2+0=3, 3\n".into(),
        };
        let m = messages(
            &answered(&[ex("What is 1 + 2?", "3"), ex("Compute 5 - 4.", "1")]),
            "Q",
        );
        let got: Vec<(&str, &str)> = m
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("user", "What is 1 + 2?"),
                ("assistant", "The answer is 3."),
                ("user", "Compute 5 - 4."),
                ("assistant", "The answer is 1."),
                ("user", "Q"),
            ]
        );
    }

    /// The SFT prompt of a follow-up equals what the workbench sends for the same thread: the
    /// first reply generated token by token (phases as the decode loop marks them, end of
    /// sentence included), the thread turned into chat messages by the session
    /// (`Message::answer_text`), rendered by the model's own template.
    #[test]
    fn a_training_prompt_is_what_the_workbench_sends() {
        use crate::backend::ModelInfo;
        use crate::session::{Message, Role, Session};
        use crate::text::{Phase, TextCodec};
        use crate::trace::TokenRecord;

        let codec = TextCodec::load(std::path::Path::new("models/thinkbench-tiny")).unwrap();
        let eos = codec.eos_ids()[0];
        let model = ModelInfo {
            eos_ids: codec.eos_ids().to_vec(),
            think_ids: codec.think_ids(),
            ..ModelInfo::default()
        };
        let close = codec.think_ids().unwrap().1;
        let mut rng = StdRng::seed_from_u64(11);
        let first = Arithmetic.sample(&mut rng, 4, Split::Train);
        let second = Arithmetic.sample(&mut rng, 3, Split::Train);
        let third = Arithmetic.sample(&mut rng, 5, Split::Train);

        // A reply as the engine streams it: the completion's tokens, then end of sentence.
        let reply = |ex: &Example| {
            let mut ids = codec.encode_raw(&ex.completion()).unwrap();
            ids.push(eos);
            let mut phase = Phase::Think;
            let tokens = ids
                .iter()
                .map(|&id| {
                    let t = TokenRecord {
                        id,
                        text: codec.token_text(id),
                        logprob: 0.0,
                        top: Vec::new(),
                        entropy: 0.0,
                        phase,
                        routing: Vec::new(),
                        forced: false,
                    };
                    if id == close {
                        phase = Phase::Answer;
                    }
                    t
                })
                .collect();
            Message {
                tokens,
                ..Message::new(Role::Assistant, "")
            }
        };
        let mut session = Session::new(0);
        let c = &mut session.conversation;
        let q1 = c.push(0, Message::new(Role::User, first.prompt.clone()));
        let a1 = c.push(q1, reply(&first));
        let q2 = c.push(a1, Message::new(Role::User, second.prompt.clone()));
        let a2 = c.push(q2, reply(&second));
        let q3 = c.push(a2, Message::new(Role::User, third.prompt.clone()));
        assert_eq!(
            c.nodes[a1].message.answer_text(&model),
            first.final_answer()
        );
        let sent = codec
            .encode_chat(&c.chat_messages(q3, &model), true)
            .unwrap();
        let trained =
            crate::train::data::encode(&codec, &[first.clone(), second.clone()], &third, eos)
                .unwrap();
        assert_eq!(trained.ids[..trained.prompt_len], sent.ids[..]);
        // GRPO's prompt for the same question asked late (`data.earlier_turns`) is the same.
        let late = crate::train::problems::Problem {
            prompt: third.prompt.clone(),
            answer: third.answer.clone(),
            level: Some(third.level),
            earlier: answered(&[first.clone(), second]),
        };
        assert_eq!(
            crate::train::rollout::prompt_ids(&codec, &late).unwrap(),
            sent.ids
        );
        // R1's rendering: the earlier replies without their reasoning, the new one opening it.
        assert!(!sent.text.contains(first.reasoning.as_str()));
        assert!(sent.text.contains(&format!(
            "{}<｜Assistant｜>{}<｜end▁of▁sentence｜>",
            first.prompt,
            first.final_answer()
        )));
        assert!(sent
            .text
            .ends_with(&format!("{}<｜Assistant｜><think>\n", third.prompt)));
        // And the completion that follows is the teacher's, as in a single-turn sequence.
        let alone = crate::train::data::encode(&codec, &[], &third, eos).unwrap();
        assert_eq!(
            trained.ids[trained.prompt_len..],
            alone.ids[alone.prompt_len..]
        );
    }
}
