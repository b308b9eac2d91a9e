//! Which model plain `thinkbench` (and `make run`) opens when no `--model` is given, and the
//! launch of the workbench on it.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::workbench::{self, WorkbenchArgs};

/// The built-in model: a miniature R1 trained here by `thinkbench train recipes/tiny-sft.toml`
/// (a path relative to the repository).
pub const DEFAULT_MODEL: &str = "models/thinkbench-tiny";

/// The default model folder: [`DEFAULT_MODEL`] found from the working directory, from the
/// executable (`target/release/thinkbench` sits two levels under the repository) or from the
/// source tree the binary was built from.
pub fn default_model() -> PathBuf {
    let mut candidates = vec![PathBuf::from(DEFAULT_MODEL)];
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            candidates.push(up.join(DEFAULT_MODEL));
        }
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL));
    candidates
        .iter()
        .find(|p| p.join("config.json").is_file())
        .cloned()
        .unwrap_or_else(|| candidates.remove(0))
}

/// Opens the workbench on `model` (or the default model).
pub fn run(model: Option<&Path>, args: &WorkbenchArgs) -> Result<()> {
    let mut args = args.clone();
    args.model = Some(model.map_or_else(default_model, Path::to_path_buf));
    workbench::run(&args, None)
}
