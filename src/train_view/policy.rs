//! Which weights drew a step's rollouts, so a rollout is scored by the policy that produced it.
//!
//! The trainer numbers steps from 1 and logs a step's rollouts under the step they train:
//! rollouts of step `s` were drawn before its update, by the weights after `s - 1` updates, and
//! `checkpoints/step-K` holds the weights after `K` updates. So the exact policy of step `s` is
//! `step-(s-1)` (the starting model for step 1). When that checkpoint was not kept, the newest one
//! before it is the nearest stand-in, and the label says so.

use std::path::{Path, PathBuf};

use crate::train::checkpoint::step_dir_name;

/// The model to score a step's rollouts with.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub dir: PathBuf,
    /// Its folder name: `step-00000025`, or the starting model's.
    pub label: String,
    /// The rollout step.
    pub step: u64,
    /// These are the very weights that drew the rollouts.
    pub exact: bool,
}

impl Policy {
    /// A few words for the notice (it must fit an 80-column status line after "scored by
    /// LABEL"): whether these are the rollout's own policy, and if not, which was missing.
    pub fn describe(&self) -> String {
        if self.exact {
            format!("step {}'s own policy", self.step)
        } else {
            format!(
                "{}, step {}'s policy, not kept",
                step_dir_name(self.step.saturating_sub(1)),
                self.step
            )
        }
    }
}

/// The policy of rollout step `step` of the run in `run_dir`, given its checkpoints on disk (by
/// step) and the model it started from. `None` only when there is neither a checkpoint before
/// the step nor a known starting model.
pub fn policy_for_step(
    run_dir: &Path,
    base: Option<&Path>,
    checkpoints: &[u64],
    step: u64,
) -> Option<Policy> {
    let before = step.saturating_sub(1);
    let nearest = checkpoints.iter().copied().filter(|&k| k <= before).max();
    match nearest {
        Some(k) => {
            let dir = super::run::checkpoint_dir(run_dir, k);
            Some(Policy {
                label: dir
                    .file_name()
                    .map_or_else(|| step_dir_name(k), |n| n.to_string_lossy().into_owned()),
                dir,
                step,
                exact: k == before,
            })
        }
        None => base.map(|b| Policy {
            dir: b.to_path_buf(),
            label: b.file_name().map_or_else(
                || b.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            step,
            exact: before == 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_scored_by_the_weights_before_its_update() {
        let run = Path::new("runs/r");
        let base = Path::new("models/thinkbench-tiny");
        let at = |ck: &[u64], step| policy_for_step(run, Some(base), ck, step).unwrap();
        // Step 1's rollouts came from the starting model.
        let p = at(&[1, 2], 1);
        assert_eq!((p.label.as_str(), p.exact), ("thinkbench-tiny", true));
        assert_eq!(p.dir, base);
        // Step 3's from the weights after step 2.
        let p = at(&[1, 2, 3], 3);
        assert_eq!((p.label.as_str(), p.exact), ("step-00000002", true));
        assert_eq!(p.dir, run.join("checkpoints/step-00000002"));
        assert_eq!(p.describe(), "step 3's own policy");
        // Step 5's policy (step-4) was not kept: the nearest earlier checkpoint, said plainly.
        let p = at(&[2, 6], 5);
        assert_eq!((p.label.as_str(), p.exact), ("step-00000002", false));
        assert!(p.describe().contains("step-00000004"), "{}", p.describe());
        // No checkpoint before the step: the starting model, not exact past step 1.
        let p = at(&[6], 4);
        assert_eq!((p.label.as_str(), p.exact), ("thinkbench-tiny", false));
        assert_eq!(policy_for_step(run, None, &[], 3), None);
    }
}
