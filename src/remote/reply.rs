//! One reply as it streams from a server, turned into the workbench's per-token trace: a token
//! per log-probability entry (or, without them, a record per streamed piece of text), each in
//! its phase, with the routing placed on the tokens it belongs to when it arrives at the end.

use crate::backend::stand_in_id;
use crate::trace::{LayerRouting, Phase, PromptToken, TokenRecord};

use super::model_shape::ModelShape;
use super::think::{Piece, ThinkSplitter};
use super::wire::{self, Chunk, LogprobEntry, RawRouting, Timings, Usage};

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// A new token and the text of each of its alternatives.
pub type NewToken = (TokenRecord, Vec<String>);

#[derive(Debug)]
pub struct Reply {
    pub tokens: Vec<TokenRecord>,
    /// Bytes of reasoning and of answer text the server sent that log-probability entries have
    /// not yet claimed: an entry's phase is the phase of the text it spells.
    unclaimed: [usize; 2],
    /// The phase a token with no text of its own gets (an end-of-sequence token, a tag the
    /// server's reasoning parser swallowed).
    current: Phase,
    /// The server splits the reasoning itself (`reasoning_content` / `reasoning`).
    reasoning_field: bool,
    /// Otherwise `<think>…</think>` is split out of the content here.
    splitter: ThinkSplitter,
    /// A tag has been seen in the content.
    tagged: bool,
    /// A closing tag went by: every token after it is answer.
    closed: bool,
    /// Bytes of a character whose last byte is in a later token.
    partial: Vec<u8>,
    /// Some chunk carried log-probabilities.
    pub logprobs_seen: bool,
    /// Every entry so far carried its token id.
    pub ids: bool,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub timings: Option<Timings>,
    pub routing: Option<RawRouting>,
    /// The last token spelled none of the text the server showed (a special token such as the
    /// end-of-sequence marker, which servers leave out of the content).
    unshown_last: bool,
    /// Phases already reported changed (the reply turned out to have begun inside a thought):
    /// the caller sends the tokens again.
    pub revised: bool,
}

impl Default for Reply {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            unclaimed: [0, 0],
            current: Phase::Answer,
            reasoning_field: false,
            splitter: ThinkSplitter::new(false),
            tagged: false,
            closed: false,
            partial: Vec::new(),
            logprobs_seen: false,
            ids: true,
            finish_reason: None,
            usage: None,
            timings: None,
            routing: None,
            unshown_last: false,
            revised: false,
        }
    }
}

fn slot(p: Phase) -> usize {
    match p {
        Phase::Think => 0,
        Phase::Answer => 1,
    }
}

impl Reply {
    /// Takes one chunk; returns the tokens it added.
    pub fn push(&mut self, c: Chunk) -> Vec<NewToken> {
        // Taken apart, not cloned: a vLLM reply's routing can be megabytes.
        let Chunk {
            reasoning,
            content,
            logprobs,
            finish_reason,
            usage,
            timings,
            routing,
            ..
        } = c;
        if finish_reason.is_some() {
            self.finish_reason = finish_reason;
        }
        if usage.is_some() {
            self.usage = usage;
        }
        if timings.is_some() {
            self.timings = timings;
        }
        if routing.is_some() {
            self.routing = routing;
        }
        let mut pieces: Vec<(Phase, String)> = Vec::new();
        if !reasoning.is_empty() {
            self.reasoning_field = true;
            pieces.push((Phase::Think, reasoning));
        }
        if !content.is_empty() {
            if self.reasoning_field {
                pieces.push((Phase::Answer, content));
            } else {
                pieces.extend(self.split_content(&content));
            }
        }
        if logprobs.is_empty() {
            return pieces
                .into_iter()
                .filter(|(_, t)| !t.is_empty())
                .map(|(phase, text)| self.add(text_only(phase, text), Vec::new()))
                .collect();
        }
        self.logprobs_seen = true;
        for (phase, text) in &pieces {
            self.unclaimed[slot(*phase)] += text.len();
        }
        logprobs
            .iter()
            .map(|e| {
                let (rec, alts) = self.entry(e);
                self.add(rec, alts)
            })
            .collect()
    }

    /// The end of the stream: text held back for a tag that never came.
    pub fn finish(&mut self) -> Vec<NewToken> {
        let rest: Vec<(Phase, String)> = self
            .splitter
            .finish()
            .into_iter()
            .map(piece)
            .filter(|(_, t)| !t.is_empty())
            .collect();
        if self.logprobs_seen {
            return Vec::new();
        }
        rest.into_iter()
            .map(|(phase, text)| self.add(text_only(phase, text), Vec::new()))
            .collect()
    }

    fn add(&mut self, rec: TokenRecord, alts: Vec<String>) -> NewToken {
        self.tokens.push(rec.clone());
        (rec, alts)
    }

    /// Content from a server without a reasoning parser. R1's template opens the thought in
    /// the prompt, so such a reply shows only the closing tag: when it comes before any opening
    /// one, everything before it was thought, and the tokens already reported are revised.
    fn split_content(&mut self, content: &str) -> Vec<(Phase, String)> {
        if !self.tagged && !self.splitter.in_thought() {
            if let Some(at) = content.find(CLOSE).filter(|_| !content.contains(OPEN)) {
                self.tagged = true;
                for t in &mut self.tokens {
                    if t.phase != Phase::Think {
                        t.phase = Phase::Think;
                        self.revised = true;
                    }
                }
                let mut out = vec![(Phase::Think, content[..at].to_string())];
                out.extend(
                    self.splitter
                        .push(&content[at + CLOSE.len()..])
                        .into_iter()
                        .map(piece),
                );
                self.current = Phase::Answer;
                return out;
            }
        }
        if content.contains(OPEN) || content.contains(CLOSE) {
            self.tagged = true;
        }
        self.splitter.push(content).into_iter().map(piece).collect()
    }

    /// One log-probability entry as a token record.
    fn entry(&mut self, e: &LogprobEntry) -> NewToken {
        let text = match &e.bytes {
            Some(b) => self.complete_characters(b),
            None => e.token.clone(),
        };
        let id = e.id.or_else(|| vllm_token_id(&e.token));
        self.ids &= id.is_some();
        let id = id.unwrap_or_else(|| stand_in_id(&e.token));
        let phase = self.phase_of(&e.token, text.len());
        let top: Vec<(u32, f32)> = e
            .top
            .iter()
            .map(|t| {
                let id =
                    t.id.or_else(|| vllm_token_id(&t.token))
                        .unwrap_or_else(|| stand_in_id(&t.token));
                (id, t.logprob)
            })
            .collect();
        let alts = e
            .top
            .iter()
            .map(|t| match &t.bytes {
                Some(b) => String::from_utf8_lossy(b).into_owned(),
                None => t.token.clone(),
            })
            .collect();
        let rec = TokenRecord {
            id,
            text,
            logprob: e.logprob,
            entropy: returned_entropy(&top),
            top,
            phase,
            routing: Vec::new(),
            forced: false,
        };
        (rec, alts)
    }

    /// The text of `bytes` after any earlier partial character: whole characters only, the
    /// rest kept for the next token (as the local decode loop reports a split character).
    fn complete_characters(&mut self, bytes: &[u8]) -> String {
        self.partial.extend_from_slice(bytes);
        match std::str::from_utf8(&self.partial) {
            Ok(s) => {
                let s = s.to_string();
                self.partial.clear();
                s
            }
            Err(e) if e.error_len().is_none() => {
                // Ends inside a character: emit what is whole.
                let whole = e.valid_up_to();
                let s = String::from_utf8_lossy(&self.partial[..whole]).into_owned();
                self.partial.drain(..whole);
                s
            }
            Err(_) => {
                let s = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                s
            }
        }
    }

    fn phase_of(&mut self, token: &str, len: usize) -> Phase {
        self.unshown_last = false;
        if token.contains(CLOSE) {
            // The closing tag belongs to the thought it closes (as locally), and so does every
            // token before it: servers trim the thought's whitespace, so the text alone can
            // leave a trailing newline unclaimed.
            self.current = Phase::Answer;
            self.closed = true;
            self.unclaimed = [0, 0];
            for t in &mut self.tokens {
                if t.phase != Phase::Think {
                    t.phase = Phase::Think;
                    self.revised = true;
                }
            }
            return Phase::Think;
        }
        if self.closed {
            let left = &mut self.unclaimed[slot(Phase::Answer)];
            self.unshown_last = *left == 0 && len > 0;
            *left = left.saturating_sub(len.max(1));
            return Phase::Answer;
        }
        if token.contains(OPEN) {
            self.current = Phase::Think;
            return Phase::Think;
        }
        for p in [Phase::Think, Phase::Answer] {
            let left = &mut self.unclaimed[slot(p)];
            if *left > 0 {
                *left = left.saturating_sub(len.max(1));
                self.current = p;
                return p;
            }
        }
        self.unshown_last = len > 0;
        self.current
    }

    /// The id of the token that ended the reply when the server stopped on a token it did not
    /// show: its end-of-sequence marker, which the transcript then leaves out of the prose.
    pub fn end_of_sequence(&self) -> Option<u32> {
        let last = self.tokens.last()?;
        (self.finish_reason.as_deref() == Some("stop") && self.unshown_last).then_some(last.id)
    }

    /// Places the routing the server sent on the prompt and the tokens: rows for every prompt
    /// token, then for every generated token but the last (which never went through the model).
    /// Returns the prompt's rows, or why the routing cannot be placed.
    pub fn place_routing(&mut self, shape: &ModelShape) -> Result<Vec<PromptToken>, String> {
        let Some(raw) = self.routing.take() else {
            return Ok(Vec::new());
        };
        let generated = self.tokens.len();
        let prompt_hint = self.usage.as_ref().and_then(|u| u.prompt_tokens);
        // The layer axis covers every layer (SGLang, thinkbench serve) or only the MoE layers.
        let per_token = |layers: usize| layers * shape.top_k.max(1);
        let all = per_token(shape.num_layers);
        let moe = per_token(shape.moe_layers.len());
        let rows_if =
            |per: usize| (per > 0 && raw.experts.len() % per == 0).then(|| raw.experts.len() / per);
        let fits = |rows: usize| match prompt_hint {
            Some(p) => rows == p + generated.saturating_sub(1) || rows == p + generated,
            None => rows + 1 >= generated,
        };
        let layers = match &raw.shape {
            Some(s) if s.len() == 3 => s[1],
            _ => match (rows_if(all), rows_if(moe)) {
                (Some(r), _) if fits(r) => shape.num_layers,
                (_, Some(r)) if fits(r) => shape.moe_layers.len(),
                _ => {
                    return Err(format!(
                        "the server's routing has {} expert ids, which is not {} generated and {} prompt tokens × {} layers × top-{} (check --remote-config)",
                        raw.experts.len(),
                        generated,
                        prompt_hint.map_or("some".into(), |p| p.to_string()),
                        shape.num_layers,
                        shape.top_k
                    ))
                }
            },
        };
        let shaped = wire::shape_routing(&raw, layers, shape.top_k, shape.n_experts)
            .map_err(|e| e.to_string())?;
        let layer_ids: Vec<usize> = if layers == shape.num_layers {
            (0..layers).collect()
        } else {
            shape.moe_layers.clone()
        };
        let rows: Vec<Vec<LayerRouting>> = (0..shaped.tokens)
            .map(|t| {
                layer_ids
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| shape.moe_layers.contains(l))
                    .map(|(li, &layer)| LayerRouting {
                        layer,
                        // Padding ids are missing experts, not expert 0.
                        experts: shaped.experts[t][li].iter().flatten().copied().collect(),
                        weights: shaped
                            .weights
                            .as_ref()
                            .map(|w| {
                                shaped.experts[t][li]
                                    .iter()
                                    .zip(&w[t][li])
                                    .filter(|(e, _)| e.is_some())
                                    .map(|(_, &w)| w)
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .collect();
        // Rows for the prompt come first; the server's count of prompt tokens says where they
        // end, else every generated token but the last has a row.
        let prompt_rows = match prompt_hint {
            Some(p) if p <= rows.len() => p,
            _ => rows.len().saturating_sub(generated.saturating_sub(1)),
        };
        let mut rows = rows.into_iter();
        let prompt: Vec<PromptToken> = rows
            .by_ref()
            .take(prompt_rows)
            .map(|routing| PromptToken {
                id: u32::MAX,
                routing,
            })
            .collect();
        for (t, r) in self.tokens.iter_mut().zip(rows) {
            t.routing = r;
        }
        Ok(prompt)
    }
}

fn piece(p: Piece) -> (Phase, String) {
    match p {
        Piece::Reasoning(t) => (Phase::Think, t),
        Piece::Answer(t) => (Phase::Answer, t),
    }
}

/// A piece of text from a server that returned no log-probabilities.
fn text_only(phase: Phase, text: String) -> TokenRecord {
    TokenRecord {
        id: stand_in_id(&text),
        text,
        logprob: f32::NAN,
        top: Vec::new(),
        entropy: f32::NAN,
        phase,
        routing: Vec::new(),
        forced: false,
    }
}

/// vLLM's `return_tokens_as_token_ids` spells a token `token_id:123`.
fn vllm_token_id(token: &str) -> Option<u32> {
    token.strip_prefix("token_id:")?.parse().ok()
}

/// Entropy over the alternatives that came back (all a server gives): a lower bound on the
/// whole distribution's. NaN when none came back.
pub fn returned_entropy(top: &[(u32, f32)]) -> f32 {
    let ps: Vec<f64> = top
        .iter()
        .map(|&(_, lp)| (lp as f64).exp())
        .filter(|p| *p > 0.0)
        .collect();
    if ps.is_empty() {
        return f32::NAN;
    }
    ps.iter().map(|p| -p * p.ln()).sum::<f64>() as f32
}
