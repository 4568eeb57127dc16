//! Progress on stderr, for every command. On a terminal: bars (indicatif) redrawn in place,
//! with lines printed above them. Anywhere else (a log file, a pipe, the tests): no bars, only
//! the plain lines the commands have always printed there, which scripts read: a line per
//! layer (`prune`), per row (`compare`), per quarter of each stage (`select`, `demo`).

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use subprune::Stage;

/// Where progress goes: bars on a terminal, plain lines elsewhere.
pub struct Progress {
    /// The bars' common display; `None` when stderr is not a terminal.
    bars: Option<MultiProgress>,
}

/// One progress bar (on a terminal; nothing elsewhere), and the display it belongs to.
pub struct Bar(Option<(ProgressBar, MultiProgress)>);

impl Progress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn stderr() -> Self {
        Self::to(
            std::io::stderr()
                .is_terminal()
                .then(ProgressDrawTarget::stderr),
        )
    }

    /// Bars drawn to `target`, or plain lines when `None`.
    fn to(target: Option<ProgressDrawTarget>) -> Self {
        Self {
            bars: target.map(MultiProgress::with_draw_target),
        }
    }

    /// Whether bars are shown (stderr is a terminal).
    pub fn is_terminal(&self) -> bool {
        self.bars.is_some()
    }

    /// A new bar `label [====    ] done/total unit`, below the others.
    pub fn bar(&self, label: &str, unit: &str) -> Bar {
        Bar(self.bars.as_ref().map(|multi| {
            let bar = ProgressBar::new(0)
                .with_style(bar_style())
                .with_prefix(label.to_string())
                .with_message(unit.to_string());
            (multi.add(bar), multi.clone())
        }))
    }

    /// A line on stderr: above the bars on a terminal, as it is elsewhere.
    pub fn line(&self, text: &str) {
        match &self.bars {
            // A hidden or closed terminal: the line is lost with the bars.
            Some(multi) => multi.println(text).unwrap_or(()),
            None => eprintln!("{text}"),
        }
    }

    /// A line on stderr where there are no bars (what a bar shows on a terminal).
    pub fn plain_line(&self, text: &str) {
        if self.bars.is_none() {
            eprintln!("{text}");
        }
    }

    /// A progress callback for [`subprune::select`] and its kin: a bar per stage (statistics
    /// in images, greedy in channels) on a terminal, else a line at each quarter of each stage
    /// so that a long run is never silent.
    pub fn stages(&self) -> impl FnMut(Stage, usize, usize) + '_ {
        let mut current: Option<(Stage, Bar)> = None;
        let mut quarters = QuarterLines::default();
        move |stage, done, total| {
            if !self.is_terminal() {
                if let Some(line) = quarters.line(stage, done, total) {
                    eprintln!("{line}");
                }
                return;
            }
            if current.as_ref().is_none_or(|(s, _)| *s != stage) {
                if let Some((_, bar)) = current.take() {
                    bar.finish();
                }
                let (label, unit) = stage_names(stage);
                current = Some((stage, self.bar(label, unit)));
            }
            let (_, bar) = current.as_ref().expect("set above");
            bar.update(done, total);
            if done == total {
                bar.finish();
            }
        }
    }
}

impl Bar {
    /// Shows `done` of `total`.
    pub fn update(&self, done: usize, total: usize) {
        if let Some((bar, _)) = &self.0 {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    }

    /// Sets the label (before the bar) and the unit (after the count).
    pub fn relabel(&self, label: &str, unit: &str) {
        if let Some((bar, _)) = &self.0 {
            bar.set_prefix(label.to_string());
            bar.set_message(unit.to_string());
        }
    }

    /// Replaces the bar by a line saying where it ended (`eval: 3000/3000 images in 3.4 s`), above
    /// the bars still running; later updates are ignored.
    pub fn finish(&self) {
        if let Some((bar, multi)) = &self.0 {
            if bar.is_finished() {
                return;
            }
            let line = format!(
                "{}: {}/{} {} in {:.1} s",
                bar.prefix(),
                bar.position(),
                bar.length().unwrap_or(0),
                bar.message(),
                bar.elapsed().as_secs_f64()
            );
            bar.finish_and_clear();
            multi.println(line).unwrap_or(());
        }
    }

    /// Removes the bar from the display.
    pub fn clear(&self) {
        if let Some((bar, _)) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} [{bar:32}] {pos}/{len} {msg} ({elapsed}, about {eta} left)",
    )
    .expect("the template is valid")
    .progress_chars("=> ")
}

fn stage_names(stage: Stage) -> (&'static str, &'static str) {
    match stage {
        Stage::Statistics => ("statistics", "images"),
        Stage::Greedy => ("greedy", "channels"),
    }
}

/// The plain lines of [`Progress::stages`]: `statistics: 128/512 images` at the start of each
/// quarter of a stage (and at its end).
#[derive(Default)]
struct QuarterLines {
    last: Option<(Stage, usize)>,
}

impl QuarterLines {
    fn line(&mut self, stage: Stage, done: usize, total: usize) -> Option<String> {
        let quarter = (done * 4).checked_div(total).unwrap_or(4);
        let previous = match self.last {
            Some((s, q)) if s == stage => Some(q),
            _ => None,
        };
        if previous == Some(quarter) {
            return None;
        }
        self.last = Some((stage, quarter));
        let (label, unit) = stage_names(stage);
        Some(format!("{label}: {done}/{total} {unit}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_stage_lines_come_once_per_quarter_and_at_the_end() {
        let mut q = QuarterLines::default();
        let stats: Vec<String> = (1..=10)
            .filter_map(|d| q.line(Stage::Statistics, d, 10))
            .collect();
        // Quarters 0 (1, 2), 1 (3, 4), 2 (5..7), 3 (8, 9), 4 (10).
        assert_eq!(
            stats,
            [
                "statistics: 1/10 images",
                "statistics: 3/10 images",
                "statistics: 5/10 images",
                "statistics: 8/10 images",
                "statistics: 10/10 images"
            ]
        );
        // A new stage starts its own count; an empty one says so once.
        assert_eq!(
            q.line(Stage::Greedy, 1, 3).as_deref(),
            Some("greedy: 1/3 channels")
        );
        assert_eq!(q.line(Stage::Greedy, 1, 3), None);
        assert_eq!(
            q.line(Stage::Statistics, 0, 0).as_deref(),
            Some("statistics: 0/0 images")
        );
        assert_eq!(q.line(Stage::Statistics, 0, 0), None);
    }

    #[test]
    fn bars_follow_updates_on_a_terminal_and_do_nothing_elsewhere() {
        let shown = Progress::to(Some(ProgressDrawTarget::hidden()));
        assert!(shown.is_terminal());
        let bar = shown.bar("eval", "images");
        bar.update(3, 10);
        let (inner, _) = bar.0.as_ref().expect("a bar on a terminal");
        assert_eq!((inner.position(), inner.length()), (3, Some(10)));
        bar.relabel("greedy", "channels");
        assert_eq!(inner.prefix(), "greedy");
        assert_eq!(inner.message(), "channels");
        bar.finish();
        assert!(inner.is_finished());

        let mut stages = shown.stages();
        stages(Stage::Statistics, 2, 4);
        stages(Stage::Statistics, 4, 4);
        stages(Stage::Greedy, 1, 3);

        let plain = Progress::to(None);
        assert!(!plain.is_terminal());
        let bar = plain.bar("eval", "images");
        assert!(bar.0.is_none());
        bar.update(1, 2);
        bar.finish();
    }
}
