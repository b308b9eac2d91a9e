//! `[rewards.overlong]`: DAPO's soft overlong punishment, a function of the completion's length in
//! tokens.

use serde::{Deserialize, Serialize};

use super::{Reward, RewardContext, RewardKind, Verdict};
use crate::train::recipe::{Check, GrpoRecipe, RecipeError};

/// DAPO's soft overlong punishment: 0 up to `max_length - buffer` tokens, then falling linearly
/// to -1 at `max_length`, -1 beyond.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlongReward {
    pub weight: f64,
    /// L_cache: the length of the penalty ramp.
    pub buffer: usize,
    /// L_max (default: generation.max_new_tokens).
    #[serde(default)]
    pub max_length: Option<usize>,
}

impl OverlongReward {
    /// L_max (the length where the penalty reaches -1) and L_cache, given the generation budget
    /// that L_max defaults to.
    pub fn ramp(&self, max_new_tokens: usize) -> (usize, usize) {
        (self.max_length.unwrap_or(max_new_tokens), self.buffer)
    }
}

impl RewardKind for OverlongReward {
    const NAME: &'static str = "overlong";
}

impl Reward for OverlongReward {
    fn weight(&self) -> f64 {
        self.weight
    }

    fn score(&self, ctx: &RewardContext) -> Verdict {
        let (max, buffer) = self.ramp(ctx.max_new_tokens);
        Verdict {
            value: overlong_penalty(ctx.tokens, max, buffer),
            metrics: vec![("tokens", ctx.tokens as f64)],
            answer: None,
        }
    }

    fn validate(&self, c: &Check, recipe: &GrpoRecipe) -> Result<(), RecipeError> {
        let (max, buffer) = self.ramp(recipe.generation.max_new_tokens);
        c.that(
            buffer >= 1 && buffer <= max,
            "rewards.overlong.buffer",
            format!("must be between 1 and max_length ({max})"),
        )
    }
}

/// DAPO's soft overlong punishment for a completion of `len` tokens:
/// 0 up to `max - buffer`, then `((max - buffer) - len) / buffer` down to -1 at `max`, -1 beyond.
pub fn overlong_penalty(len: usize, max: usize, buffer: usize) -> f64 {
    let start = max.saturating_sub(buffer);
    if len <= start {
        0.0
    } else if len <= max {
        (start as f64 - len as f64) / buffer as f64
    } else {
        -1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_matches_dapo_test_values() {
        // L_max = 20480, L_cache = 4096 (DAPO's settings).
        assert_eq!(overlong_penalty(16384, 20480, 4096), 0.0);
        assert_eq!(overlong_penalty(10, 20480, 4096), 0.0);
        assert_eq!(overlong_penalty(18432, 20480, 4096), -0.5);
        assert_eq!(overlong_penalty(20480, 20480, 4096), -1.0);
        assert_eq!(overlong_penalty(20481, 20480, 4096), -1.0);
        assert_eq!(overlong_penalty(17408, 20480, 4096), -0.25);
    }
}
