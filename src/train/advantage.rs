//! Group-relative advantages, exactly as TRL's `GRPOTrainer` computes them.
//!
//! The G completions of one prompt form a group. Each completion's advantage is its reward minus
//! the group's mean, divided (unless scaling is off) by a standard deviation plus 1e-4: the
//! group's (`group`, Bessel-corrected: N-1) or the whole batch's (`batch`). Every token of the
//! completion gets that one number (outcome supervision).
//!
//! Worked example (TRL's): rewards [1, 0, 0, 1] have mean 0.5 and Bessel std 0.5773503, so the
//! advantages are ±0.5 / 0.5774503 = ±0.8658754. (With the population std and 1e-8 they would be
//! ±0.99999998 — a common parity trap.)
//!
//! A group whose rewards are all equal has zero advantages everywhere: it teaches nothing, and a
//! step made only of such groups has a loss of exactly 0 (when β = 0). `zero_std` flags them, so
//! the log can say why ("frac_reward_zero_std").

use super::recipe::RewardScaling;

/// TRL's epsilon under the standard deviation.
pub const STD_EPS: f64 = 1e-4;

#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    /// One per completion, in the order of the rewards.
    pub values: Vec<f64>,
    /// One per group: all its rewards were equal.
    pub zero_std: Vec<bool>,
    /// One per group: the mean reward.
    pub group_mean: Vec<f64>,
    /// One per group: the Bessel-corrected standard deviation.
    pub group_std: Vec<f64>,
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// Bessel-corrected standard deviation (N - 1), as `torch.std` computes it; 0 for one value.
pub fn std_bessel(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// Advantages of `rewards`, taken as consecutive groups of `group` completions.
pub fn advantages(rewards: &[f64], group: usize, scale: RewardScaling) -> Advantages {
    assert!(
        group > 0 && rewards.len().is_multiple_of(group),
        "rewards come in whole groups"
    );
    let batch_std = std_bessel(rewards);
    let mut out = Advantages {
        values: Vec::with_capacity(rewards.len()),
        zero_std: Vec::new(),
        group_mean: Vec::new(),
        group_std: Vec::new(),
    };
    for g in rewards.chunks(group) {
        let m = mean(g);
        let s = std_bessel(g);
        out.group_mean.push(m);
        out.group_std.push(s);
        out.zero_std.push(g.iter().all(|&r| r == g[0]));
        let div = match scale {
            RewardScaling::Group => s + STD_EPS,
            RewardScaling::Batch => batch_std + STD_EPS,
            RewardScaling::None => 1.0,
        };
        out.values.extend(g.iter().map(|&r| (r - m) / div));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn trl_worked_example() {
        let a = advantages(&[1.0, 0.0, 0.0, 1.0], 4, RewardScaling::Group);
        // Hand-computed: 0.5 / (sqrt(1/3) + 1e-4) = 0.5 / 0.5774503 = 0.8658754.
        close(
            &a.values,
            &[0.8658754, -0.8658754, -0.8658754, 0.8658754],
            1e-7,
        );
        assert_eq!(a.zero_std, vec![false]);
        close(&a.group_std, &[0.5773503], 1e-7);
    }

    #[test]
    fn groups_are_independent_and_equal_rewards_give_zero() {
        let a = advantages(
            &[1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5],
            4,
            RewardScaling::Group,
        );
        close(&a.values[4..], &[0.0; 4], 0.0);
        assert_eq!(a.zero_std, vec![false, true]);
        assert_eq!(a.group_mean, vec![0.5, 0.5]);
    }

    #[test]
    fn batch_and_no_scaling() {
        let r = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        // Batch: mean 0.75, Bessel variance (2·0.5625 + 6·0.0625)/7 = 1.5/7; std 0.4629100.
        // Group 1 deviations ±0.5 from its own mean, divided by 0.4630100.
        let a = advantages(&r, 4, RewardScaling::Batch);
        let d = 0.5 / (0.4629100 + 1e-4);
        close(&a.values, &[d, -d, -d, d, 0.0, 0.0, 0.0, 0.0], 1e-6);
        // None (Dr. GRPO): the bare difference from the group mean.
        let a = advantages(&[3.0, 1.0, 2.0], 3, RewardScaling::None);
        close(&a.values, &[1.0, -1.0, 0.0], 0.0);
    }

    #[test]
    fn advantages_sum_to_zero_per_group() {
        let a = advantages(&[0.2, 1.5, -1.0, 0.7, 0.0, 0.1], 3, RewardScaling::Group);
        for g in a.values.chunks(3) {
            assert!(g.iter().sum::<f64>().abs() < 1e-12);
        }
    }
}
