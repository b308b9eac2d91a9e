//! A run folder and the things around it: the recipe a run was started with (recipe.json), its
//! checkpoints, the recipes and runs the Train tab offers, and launching `thinkbench train`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::train::recipe::{self, Recipe};

/// The log of a run launched from the workbench (stdout and stderr of `thinkbench train`).
pub const LOG_FILE: &str = "train.log";

/// What the view needs of the recipe a run was started with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunInfo {
    pub name: String,
    pub total_steps: Option<u64>,
    /// The model the run started from (the A/B's "base").
    pub base_model: Option<PathBuf>,
    pub group_size: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub beta: Option<f64>,
    /// What wrote the run when it was not thinkbench's trainer (an exported TRL script's
    /// callback says `trl 1.16.0 (thinkbench_callback.py)`).
    pub producer: Option<String>,
    /// The precision rollouts were sampled in, when not the update's f32 (`generation.dtype`).
    pub rollout_dtype: Option<String>,
}

impl RunInfo {
    /// From `recipe.json` (GRPO's serialised recipe); loose, so an older run's file still reads.
    pub fn from_recipe_json(v: &Value) -> Self {
        let get = |path: &[&str]| path.iter().try_fold(v, |v, k| v.get(k));
        Self {
            name: get(&["name"])
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            total_steps: get(&["train", "steps"]).and_then(Value::as_u64),
            base_model: get(&["model", "init"])
                .and_then(Value::as_str)
                .map(crate::train::grpo::resolve_model_dir),
            group_size: get(&["generation", "group_size"])
                .and_then(Value::as_u64)
                .map(|g| g as usize),
            max_new_tokens: get(&["generation", "max_new_tokens"])
                .and_then(Value::as_u64)
                .map(|g| g as usize),
            beta: get(&["grpo", "beta"]).and_then(Value::as_f64),
            producer: get(&["producer"])
                .and_then(Value::as_str)
                .map(str::to_string),
            rollout_dtype: get(&["generation", "dtype"])
                .and_then(Value::as_str)
                .filter(|d| *d != "f32")
                .map(str::to_string),
        }
    }

    /// Who wrote the run, in words for a message about one of its lines.
    pub fn producer_of(dir: &Path) -> String {
        match Self::read(dir) {
            Some(RunInfo {
                producer: Some(p), ..
            }) => p,
            Some(_) => "thinkbench train".into(),
            None => "an unknown producer (no recipe.json: not written by thinkbench train or \
                     an exported TRL script's callback)"
                .into(),
        }
    }

    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join("recipe.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        Some(Self::from_recipe_json(&v))
    }
}

/// The folder of a run, from what the user typed: the folder itself or its metrics.jsonl.
pub fn run_dir_of(path: &Path) -> PathBuf {
    if path.extension().is_some_and(|e| e == "jsonl") {
        path.parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    } else {
        path.to_path_buf()
    }
}

/// The run's completed checkpoints by step: thinkbench's `checkpoints/step-N`, and the
/// `checkpoint-N` folders transformers' Trainer writes in the run folder (an exported TRL run)
/// when they hold a whole model (a LoRA run's hold only adapters, which the A/B cannot load).
pub fn checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found = crate::train::checkpoint::list_checkpoints(&dir.join("checkpoints"));
    let trainer_folders = std::fs::read_dir(dir).into_iter().flatten().flatten();
    found.extend(trainer_folders.filter_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let step = name.strip_prefix("checkpoint-")?.parse::<u64>().ok()?;
        let p = e.path();
        let whole = p.join("config.json").is_file() && p.join("trainer_state.json").is_file();
        whole.then_some((step, p))
    }));
    found.sort();
    found.dedup_by_key(|(step, _)| *step);
    found
}

pub fn checkpoint_steps(dir: &Path) -> Vec<u64> {
    checkpoints(dir).into_iter().map(|(s, _)| s).collect()
}

/// The folder of the run's checkpoint at `step` (thinkbench's layout when there is none yet).
pub fn checkpoint_dir(dir: &Path, step: u64) -> PathBuf {
    checkpoints(dir)
        .into_iter()
        .find(|(s, _)| *s == step)
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            dir.join("checkpoints")
                .join(crate::train::checkpoint::step_dir_name(step))
        })
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChoiceKind {
    /// A GRPO recipe: Enter launches it.
    Recipe { path: PathBuf, output_dir: PathBuf },
    /// A run folder with a metrics log: Enter attaches to it.
    Run { dir: PathBuf },
}

/// One line of the launch/attach list.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub kind: ChoiceKind,
    pub label: String,
    pub detail: String,
    /// Why it cannot be used (a recipe that fails validation, an SFT recipe), if so.
    pub problem: Option<String>,
}

/// The recipes in `recipes_dir` and the runs under `runs_dir` (and in the recipes' output
/// folders), recipes first, each list by name.
pub fn list_choices(recipes_dir: &Path, runs_dir: &Path) -> Vec<Choice> {
    let mut recipes: Vec<PathBuf> = read_dir_sorted(recipes_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    recipes.sort();
    let mut out = Vec::new();
    let mut run_dirs: Vec<PathBuf> = read_dir_sorted(runs_dir)
        .into_iter()
        .filter(|d| d.join("metrics.jsonl").is_file())
        .collect();
    for path in recipes {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (kind, detail, problem) = match recipe::load(&path) {
            Ok(Recipe::Grpo(r)) => {
                let detail = format!(
                    "{} steps · {}×{} · → {}",
                    r.train.steps,
                    r.generation.prompts_per_step,
                    r.generation.group_size,
                    r.output_dir.display()
                );
                if r.output_dir.join("metrics.jsonl").is_file() && !run_dirs.contains(&r.output_dir)
                {
                    run_dirs.push(r.output_dir.clone());
                }
                (
                    ChoiceKind::Recipe {
                        path: path.clone(),
                        output_dir: r.output_dir.clone(),
                    },
                    detail,
                    None,
                )
            }
            Ok(Recipe::Sft(r)) => (
                ChoiceKind::Recipe {
                    path: path.clone(),
                    output_dir: r.output_dir.clone(),
                },
                "SFT".into(),
                Some(format!(
                    "an SFT recipe: run it with `thinkbench train {}`",
                    path.display()
                )),
            ),
            Err(e) => (
                ChoiceKind::Recipe {
                    path: path.clone(),
                    output_dir: PathBuf::new(),
                },
                String::new(),
                Some(e.to_string()),
            ),
        };
        out.push(Choice {
            kind,
            label: stem,
            detail,
            problem,
        });
    }
    for dir in run_dirs {
        let name = RunInfo::read(&dir).map(|i| i.name).unwrap_or_default();
        out.push(Choice {
            label: dir.display().to_string(),
            detail: if name.is_empty() {
                "metrics.jsonl".into()
            } else {
                format!("run of {name}")
            },
            kind: ChoiceKind::Run { dir },
            problem: None,
        });
    }
    out
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// A run started from the workbench.
pub struct Launched {
    pub dir: PathBuf,
    pub child: Child,
    pub log: PathBuf,
}

/// Validates `recipe_path` and starts `thinkbench train RECIPE` (this same executable) with its
/// output going to `<output_dir>/train.log`. The child gets its own process group, so a Ctrl-C or
/// hang-up meant for the terminal does not reach it: quitting the workbench leaves it training
/// (re-attach with `--train DIR`); `x` in the Train tab stops it.
pub fn launch(recipe_path: &Path) -> Result<Launched, String> {
    let r = match recipe::load(recipe_path).map_err(|e| e.to_string())? {
        Recipe::Grpo(r) => r,
        Recipe::Sft(_) => {
            return Err(format!(
            "{}: an SFT recipe; the Train tab watches GRPO runs (run it with `thinkbench train`)",
            recipe_path.display()
        ))
        }
    };
    let dir = r.output_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("output_dir {}: cannot create it: {e}", dir.display()))?;
    let log = dir.join(LOG_FILE);
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let _ = writeln!(
        out,
        "--- thinkbench train {} (started from the workbench)",
        recipe_path.display()
    );
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("train")
        .arg(recipe_path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("start thinkbench train: {e}"))?;
    Ok(Launched { dir, child, log })
}

/// The last non-empty line of a log (where a failed run's error is), progress-bar redraws
/// (carriage returns) taken apart.
pub fn last_log_line(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(4096);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf)
        .split(['\n', '\r'])
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_info_reads_the_fixture_recipe() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_run");
        let info = RunInfo::read(&dir).unwrap();
        assert_eq!(info.name, "fixture-grpo");
        assert_eq!(info.total_steps, Some(6));
        assert_eq!(info.group_size, Some(4));
        assert_eq!(info.beta, Some(0.04));
        assert!(info.base_model.unwrap().ends_with("models/thinkbench-tiny"));
    }

    /// An exported TRL run's `checkpoint-N` folders are its checkpoints (a folder without a
    /// model, or without the trainer's state, is not), next to thinkbench's own.
    #[test]
    fn trainer_checkpoint_folders_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let make = |rel: &str, files: &[&str]| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(&p).unwrap();
            for f in files {
                std::fs::write(p.join(f), "{}").unwrap();
            }
        };
        make("checkpoint-20", &["config.json", "trainer_state.json"]);
        make("checkpoint-5", &["config.json", "trainer_state.json"]);
        make(
            "checkpoint-30",
            &["adapter_config.json", "trainer_state.json"],
        );
        make("checkpoint-40", &["config.json"]);
        make("checkpoint-x", &["config.json", "trainer_state.json"]);
        make("checkpoints/step-00000010", &["trainer_state.json"]);
        assert_eq!(checkpoint_steps(dir.path()), [5, 10, 20]);
        assert_eq!(
            checkpoint_dir(dir.path(), 20),
            dir.path().join("checkpoint-20")
        );
        assert_eq!(
            checkpoint_dir(dir.path(), 10),
            dir.path().join("checkpoints/step-00000010")
        );
    }

    #[test]
    fn a_bad_recipe_is_listed_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let recipes = dir.path().join("recipes");
        std::fs::create_dir(&recipes).unwrap();
        std::fs::write(recipes.join("broken.toml"), "kind = \"grpo\"\nname = 3\n").unwrap();
        let list = list_choices(&recipes, &dir.path().join("runs"));
        assert_eq!(list.len(), 1);
        let p = list[0].problem.as_deref().unwrap();
        assert!(p.contains("broken.toml"), "{p}");
        let err = launch(&recipes.join("broken.toml")).err().unwrap();
        assert!(err.contains("broken.toml"), "{err}");
    }

    #[test]
    fn the_last_log_line_is_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.log");
        std::fs::write(
            &p,
            "step 1\r[===>   ] 1/4\rstep 2\nerror: model.init x: no model there\n\n",
        )
        .unwrap();
        assert_eq!(last_log_line(&p), "error: model.init x: no model there");
    }
}
