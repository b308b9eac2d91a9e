//! `thinkbench export`: a recipe as another trainer's program, so a run that outgrows a laptop
//! can move to a cluster with the same training semantics. Only TRL for now ([`trl`]).
//!
//! An export is a set of files written into one folder: each atomically (a temporary file, then
//! a rename), and never over a folder that already holds something unless asked to.

pub mod trl;

use std::path::{Path, PathBuf};

/// One file of an export: its path inside the folder and its contents.
pub struct ExportFile {
    pub path: PathBuf,
    pub text: String,
}

impl ExportFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }
}

/// Writes `files` into `out`, refusing a non-empty `out` without `force`. Returns the paths
/// written.
pub fn write_files(out: &Path, files: &[ExportFile], force: bool) -> Result<Vec<PathBuf>, String> {
    let occupied = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if occupied && !force {
        return Err(format!(
            "{}: not empty; pass --force to write the export over it",
            out.display()
        ));
    }
    let mut written = Vec::with_capacity(files.len());
    for f in files {
        let path = out.join(&f.path);
        write_atomically(&path, &f.text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`, so a reader (or
/// an interrupted export) never sees half a file.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{}.tmp", name.unwrap_or_default()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_folder_is_kept_without_force() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("mine.txt"), "keep").unwrap();
        let files = [ExportFile::new("a/b.txt", "new")];
        let e = write_files(d.path(), &files, false).unwrap_err();
        assert!(
            e.ends_with("not empty; pass --force to write the export over it"),
            "{e}"
        );
        assert!(!d.path().join("a/b.txt").exists());
        write_files(d.path(), &files, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("a/b.txt")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("mine.txt")).unwrap(),
            "keep"
        );
        // No temporary files are left behind.
        assert!(!d.path().join("a/.b.txt.tmp").exists());
    }

    #[test]
    fn an_empty_or_missing_folder_is_written() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("new");
        let got = write_files(&out, &[ExportFile::new("x.py", "print(1)\n")], false).unwrap();
        assert_eq!(got, vec![out.join("x.py")]);
    }
}
