//! The step progress bar both trainers draw, and the one way they print a line beside it (above
//! the bar on a terminal, plain lines when the bar is hidden, nothing when quiet).

use indicatif::{ProgressBar, ProgressStyle};

pub struct StepProgress {
    bar: ProgressBar,
    quiet: bool,
}

impl StepProgress {
    /// A bar over `total` steps standing at `at` (a resumed run starts part-way).
    pub fn new(total: u64, at: u64, quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .expect("valid template"),
            );
            bar.set_position(at);
            bar
        };
        Self { bar, quiet }
    }

    /// Prints one line without tearing the bar.
    pub fn say(&self, line: String) {
        if self.quiet {
        } else if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

impl std::ops::Deref for StepProgress {
    type Target = ProgressBar;
    fn deref(&self) -> &ProgressBar {
        &self.bar
    }
}
