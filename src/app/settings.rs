//! The settings panel: sampling, length and thinking budget, each a field that arrow keys change
//! or that takes a typed value.

use crossterm::event::{KeyCode, KeyModifiers};

use super::{Action, App, Input, Key, Popup};
use crate::session::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Temperature,
    TopP,
    TopK,
    MinP,
    RepetitionPenalty,
    MaxTokens,
    ThinkBudget,
    Seed,
    TopLogprobs,
}

pub const FIELDS: [Field; 9] = [
    Field::Temperature,
    Field::TopP,
    Field::TopK,
    Field::MinP,
    Field::RepetitionPenalty,
    Field::MaxTokens,
    Field::ThinkBudget,
    Field::Seed,
    Field::TopLogprobs,
];

impl Field {
    pub fn label(self) -> &'static str {
        match self {
            Field::Temperature => "temperature",
            Field::TopP => "top-p",
            Field::TopK => "top-k",
            Field::MinP => "min-p",
            Field::RepetitionPenalty => "repetition penalty",
            Field::MaxTokens => "max tokens",
            Field::ThinkBudget => "thinking budget",
            Field::Seed => "seed",
            Field::TopLogprobs => "alternatives kept",
        }
    }

    pub fn hint(self) -> &'static str {
        match self {
            Field::Temperature => "0 = greedy; R1 recommends 0.6",
            Field::TopP => "1 = off",
            Field::TopK => "0 = off",
            Field::MinP => "0 = off",
            Field::RepetitionPenalty => "1 = off",
            Field::MaxTokens => "reply length, thought included",
            Field::ThinkBudget => "close the thought after N tokens; off = unlimited",
            Field::Seed => "same seed, same reply",
            Field::TopLogprobs => "top-k shown by the token inspector",
        }
    }

    pub fn value(self, s: &Settings) -> String {
        match self {
            Field::Temperature => format!("{:.2}", s.sampling.temperature),
            Field::TopP => format!("{:.2}", s.sampling.top_p),
            Field::TopK => s.sampling.top_k.to_string(),
            Field::MinP => format!("{:.2}", s.sampling.min_p),
            Field::RepetitionPenalty => format!("{:.2}", s.sampling.repetition_penalty),
            Field::MaxTokens => s.max_tokens.to_string(),
            Field::ThinkBudget => s.think_budget.map_or("off".into(), |b| b.to_string()),
            Field::Seed => s.sampling.seed.to_string(),
            Field::TopLogprobs => s.top_logprobs.to_string(),
        }
    }

    /// One arrow-key step up (`dir` = 1) or down (-1).
    pub fn step(self, s: &mut Settings, dir: i32) {
        let f = |v: f32, step: f32, lo: f32, hi: f32| {
            { ((v + step * dir as f32) / step).round() * step }.clamp(lo, hi)
        };
        let u = |v: usize, step: usize, lo: usize| {
            if dir > 0 {
                v.saturating_add(step)
            } else {
                v.saturating_sub(step).max(lo)
            }
        };
        let sp = &mut s.sampling;
        match self {
            Field::Temperature => sp.temperature = f(sp.temperature, 0.05, 0.0, 2.0),
            Field::TopP => sp.top_p = f(sp.top_p, 0.05, 0.05, 1.0),
            Field::TopK => sp.top_k = u(sp.top_k, 1, 0),
            Field::MinP => sp.min_p = f(sp.min_p, 0.01, 0.0, 1.0),
            Field::RepetitionPenalty => {
                sp.repetition_penalty = f(sp.repetition_penalty, 0.05, 1.0, 2.0)
            }
            Field::MaxTokens => s.max_tokens = u(s.max_tokens, 64, 1).min(1 << 20),
            Field::ThinkBudget => {
                s.think_budget = match (s.think_budget, dir > 0) {
                    (None, true) => None,
                    (None, false) => Some(4096),
                    (Some(b), true) if b >= 4096 => None,
                    (Some(b), true) => Some(b + 32),
                    (Some(b), false) => Some(b.saturating_sub(32).max(1)),
                }
            }
            Field::Seed => {
                sp.seed = if dir > 0 {
                    sp.seed.wrapping_add(1)
                } else {
                    sp.seed.saturating_sub(1)
                }
            }
            Field::TopLogprobs => s.top_logprobs = u(s.top_logprobs, 1, 1).min(20),
        }
    }

    /// Sets the field from typed text; an error says what is accepted.
    pub fn parse(self, s: &mut Settings, text: &str) -> Result<(), String> {
        let t = text.trim();
        let num = |lo: f32, hi: f32| -> Result<f32, String> {
            t.parse::<f32>()
                .ok()
                .filter(|v| (lo..=hi).contains(v))
                .ok_or(format!("{}: a number from {lo} to {hi}", self.label()))
        };
        let int = || -> Result<usize, String> {
            t.parse::<usize>()
                .map_err(|_| format!("{}: a whole number", self.label()))
        };
        let sp = &mut s.sampling;
        match self {
            Field::Temperature => sp.temperature = num(0.0, 5.0)?,
            Field::TopP => sp.top_p = num(0.0, 1.0)?,
            Field::TopK => sp.top_k = int()?,
            Field::MinP => sp.min_p = num(0.0, 1.0)?,
            Field::RepetitionPenalty => sp.repetition_penalty = num(0.5, 5.0)?,
            Field::MaxTokens => s.max_tokens = int()?.max(1),
            Field::ThinkBudget => {
                s.think_budget = match t {
                    "" | "off" | "none" | "-" => None,
                    _ => Some(int()?.max(1)),
                }
            }
            Field::Seed => sp.seed = t.parse().map_err(|_| "seed: a whole number".to_string())?,
            Field::TopLogprobs => s.top_logprobs = int()?.clamp(1, 20),
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsPanel {
    pub field: usize,
    /// A value being typed.
    pub editing: Option<Input>,
    pub error: Option<String>,
}

impl SettingsPanel {
    pub fn paste(&mut self, text: &str) {
        if let Some(i) = &mut self.editing {
            i.insert_str(text.lines().next().unwrap_or(""));
        }
    }
}

pub fn handle_key(app: &mut App, key: Key) -> Option<Action> {
    let defaults = app.default_settings();
    let Some(Popup::Settings(p)) = &mut app.popup else {
        return None;
    };
    let field = FIELDS[p.field.min(FIELDS.len() - 1)];
    let settings = &mut app.session.settings;
    if let Some(input) = &mut p.editing {
        match key.code {
            KeyCode::Esc => p.editing = None,
            KeyCode::Enter => {
                match field.parse(settings, &input.text) {
                    Ok(()) => {
                        p.error = None;
                        app.unsaved = true;
                    }
                    Err(e) => p.error = Some(e),
                }
                p.editing = None;
            }
            KeyCode::Backspace => input.backspace(),
            KeyCode::Left => input.left(),
            KeyCode::Right => input.right(),
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => input.insert(c),
            _ => {}
        }
        return None;
    }
    match key.code {
        KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('s') => {
            return Some(Action::ToggleSettings)
        }
        KeyCode::Up | KeyCode::Char('k') => p.field = p.field.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') | KeyCode::Tab => {
            p.field = (p.field + 1).min(FIELDS.len() - 1)
        }
        KeyCode::Left | KeyCode::Char('h') | KeyCode::Char('-') => {
            field.step(settings, -1);
            app.unsaved = true;
        }
        KeyCode::Right | KeyCode::Char('l') | KeyCode::Char('+') => {
            field.step(settings, 1);
            app.unsaved = true;
        }
        KeyCode::Enter => {
            let mut i = Input::default();
            i.set(&field.value(settings));
            p.editing = Some(i);
            p.error = None;
        }
        KeyCode::Char('d') => {
            // Just this field's default.
            let _ = field.parse(settings, &field.value(&defaults));
            app.unsaved = true;
        }
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_stay_in_range_and_round() {
        let mut s = Settings::default();
        s.sampling.temperature = 0.6;
        Field::Temperature.step(&mut s, 1);
        assert_eq!(Field::Temperature.value(&s), "0.65");
        s.sampling.temperature = 0.02;
        Field::Temperature.step(&mut s, -1);
        assert_eq!(s.sampling.temperature, 0.0);
        s.think_budget = None;
        Field::ThinkBudget.step(&mut s, -1);
        assert_eq!(s.think_budget, Some(4096));
        Field::ThinkBudget.step(&mut s, 1);
        assert_eq!(s.think_budget, None, "past the top is unlimited");
    }

    #[test]
    fn typed_values_are_checked() {
        let mut s = Settings::default();
        assert!(Field::TopP.parse(&mut s, "1.5").is_err());
        Field::TopP.parse(&mut s, " 0.9 ").unwrap();
        assert_eq!(s.sampling.top_p, 0.9);
        Field::ThinkBudget.parse(&mut s, "128").unwrap();
        assert_eq!(s.think_budget, Some(128));
        Field::ThinkBudget.parse(&mut s, "off").unwrap();
        assert_eq!(s.think_budget, None);
        assert_eq!(
            Field::MaxTokens.parse(&mut s, "many").unwrap_err(),
            "max tokens: a whole number"
        );
    }
}
