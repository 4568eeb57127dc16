//! Progress on stderr.

use std::io::IsTerminal;

use subprune::Stage;

/// Progress on stderr: a line updated in place on a terminal; otherwise (a log file, a pipe) a
/// line at each quarter of each stage, so that a long run is never silent.
pub fn progress_printer() -> impl FnMut(Stage, usize, usize) {
    let tty = std::io::stderr().is_terminal();
    let mut last: Option<(Stage, usize)> = None;
    move |stage, done, total| {
        let (label, unit) = match stage {
            Stage::Statistics => ("statistics", "images"),
            Stage::Greedy => ("greedy", "channels"),
        };
        if tty {
            if done == total || done % 8 == 0 {
                eprint!("\r{label}: {done}/{total} {unit}\x1b[K");
                if done == total {
                    eprintln!();
                }
            }
            return;
        }
        let quarter = (done * 4).checked_div(total).unwrap_or(4);
        let previous = match last {
            Some((s, q)) if s == stage => Some(q),
            _ => None,
        };
        if previous != Some(quarter) {
            eprintln!("{label}: {done}/{total} {unit}");
            last = Some((stage, quarter));
        }
    }
}
