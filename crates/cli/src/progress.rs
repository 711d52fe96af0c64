//! The progress bar that the commands going through every user (`eval`,
//! `recommend --all-users`, `export`, `train`'s test evaluation) draw on stderr.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar of users on stderr, drawn only on a terminal.
pub fn progress_bar(users: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(users), ProgressDrawTarget::stderr());
    let template = format!(
        "{what} [{{bar:30}}] {{pos}}/{{len}} users ({{per_sec}}, {{elapsed}}, eta {{eta}})"
    );
    let style = ProgressStyle::with_template(&template)
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}
