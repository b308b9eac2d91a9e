//! Opening a logged rollout in the chat, then filling in its trace.
//!
//! The log keeps only text, so opening happens in two steps: the runner tokenises the rollout into
//! a session (tokens and phases, no probabilities), and the app then asks for a scoring pass by
//! the policy that drew the rollout (see [`crate::train_view::policy`]). The scores arrive as an
//! engine event — from the chat engine when it holds those weights, else from a scoring engine the
//! runner starts for the checkpoint — and fill the inspectors in place.

use super::{cmd, TrainCommand};
use crate::app::{App, Command, View};
use crate::runtime::engine::{EngineEvent, ScoreSpec};
use crate::session::{Role, Session};
use crate::train_view::policy::{policy_for_step, Policy};

/// A rollout waiting for its scores.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingScore {
    pub job: u64,
    /// The opened session and its reply node (the user may have moved on when the scores come).
    pub session_id: String,
    pub node: usize,
    pub policy: Policy,
}

impl App {
    pub(super) fn open_rollout_in_chat(&mut self) -> Vec<Command> {
        let Some(g) = self.shown_group() else {
            self.notice("no rollout loaded yet");
            return Vec::new();
        };
        let Some(c) = g.completions.get(self.train.rollouts.completion) else {
            return Vec::new();
        };
        let title = format!(
            "rollout · step {} · prompt {} · #{}",
            g.step,
            g.group + 1,
            self.train.rollouts.completion + 1
        );
        let (step, earlier, prompt, completion) =
            (g.step, g.earlier.clone(), g.prompt.clone(), c.text.clone());
        let run = self.train.run.as_ref();
        let policy = run.and_then(|r| {
            policy_for_step(&r.dir, r.info.base_model.as_deref(), &r.checkpoints, step)
        });
        let tokenizer = run
            .and_then(|r| r.info.base_model.clone())
            .or_else(|| self.model.as_ref().map(|m| m.dir.clone()));
        let Some(tokenizer) = tokenizer else {
            self.notice(
                "no tokenizer to split the rollout with: the run's recipe.json names no model",
            );
            return Vec::new();
        };
        self.train.opening = policy;
        cmd(TrainCommand::OpenInChat {
            tokenizer,
            title,
            earlier,
            prompt,
            completion,
        })
    }

    /// The tokenised rollout is here: show it, and ask for its scores.
    pub(super) fn on_rollout_opened(&mut self, session: Session) -> Vec<Command> {
        self.view = View::Chat;
        let mut out = self.open(session);
        let Some(policy) = self.train.opening.take() else {
            self.notice("not scored: the run's recipe.json names no starting model");
            return out;
        };
        let thread = self.session.conversation.thread();
        let Some(&node) = thread.last() else {
            return out;
        };
        let m = self.message(node);
        if m.role != Role::Assistant || m.tokens.is_empty() {
            return out;
        }
        let spec = ScoreSpec {
            job: self.next_job,
            prompt_ids: m.prompt.iter().map(|t| t.id).collect(),
            completion_ids: m.tokens.iter().map(|t| t.id).collect(),
            top_logprobs: self.session.settings.top_logprobs,
        };
        self.next_job += 1;
        self.notice(format!("scoring rollout with {}…", policy.label));
        self.train.scoring = Some(PendingScore {
            job: spec.job,
            session_id: self.session.id.clone(),
            node,
            policy: policy.clone(),
        });
        out.push(Command::Train(TrainCommand::ScoreRollout {
            model_dir: policy.dir,
            spec,
        }));
        out
    }

    /// Whether `ev` answers the pending scoring job (the chat engine's events pass through here
    /// first, since it may be the one scoring).
    pub(in crate::app) fn is_score_event(&self, ev: &EngineEvent) -> bool {
        let pending = self.train.scoring.as_ref().map(|p| p.job);
        match ev {
            EngineEvent::Scored { .. } => true,
            EngineEvent::Failed { job, .. } => pending == Some(*job),
            _ => false,
        }
    }

    /// An event of the engine that scores: fills the opened rollout's trace in place.
    pub(in crate::app) fn on_score_event(&mut self, ev: EngineEvent) -> Vec<Command> {
        match ev {
            EngineEvent::Scored {
                job,
                model,
                trace,
                top_text,
            } => {
                // A result for a rollout the user has left (or an older job) changes nothing.
                let Some(p) = self.train.scoring.take_if(|p| p.job == job) else {
                    return Vec::new();
                };
                if self.session.id != p.session_id
                    || p.node >= self.session.conversation.nodes.len()
                {
                    return Vec::new();
                }
                let m = &mut self.session.conversation.nodes[p.node].message;
                let same_ids = m.tokens.len() == trace.tokens.len()
                    && m.tokens
                        .iter()
                        .zip(&trace.tokens)
                        .all(|(a, b)| a.id == b.id);
                if !same_ids {
                    self.notice(
                        "scoring the rollout gave other tokens than the opened ones; not applied",
                    );
                    return Vec::new();
                }
                // Text and phases were already right; the scores and routing are what is new.
                for (t, s) in m.tokens.iter_mut().zip(trace.tokens) {
                    t.logprob = s.logprob;
                    t.top = s.top;
                    t.entropy = s.entropy;
                    t.routing = s.routing;
                }
                m.prompt = trace.prompt;
                self.session.token_texts.extend(top_text);
                self.session.model = Some(*model);
                self.session.name = format!("{} · scored by {}", self.session.name, p.policy.label);
                self.notice(format!(
                    "scored by {} ({})",
                    p.policy.label,
                    p.policy.describe()
                ));
            }
            EngineEvent::Failed { job, error } => {
                if let Some(p) = self.train.scoring.take_if(|p| p.job == job) {
                    self.notice(format!("scoring with {} failed: {error}", p.policy.label));
                }
            }
            EngineEvent::LoadFailed(error) => {
                if let Some(p) = self.train.scoring.take() {
                    self.notice(format!(
                        "scoring with {} failed: {} did not load: {error}",
                        p.policy.label,
                        p.policy.dir.display()
                    ));
                }
            }
            // The scoring engine's Ready: the Scored event names its model.
            _ => {}
        }
        Vec::new()
    }

    /// The model the reply at `node` is being scored with, while it is.
    pub fn scoring_with(&self, node: usize) -> Option<&str> {
        self.train
            .scoring
            .as_ref()
            .filter(|p| p.node == node && p.session_id == self.session.id)
            .map(|p| p.policy.label.as_str())
    }
}
