//! The `subprune` command line, a thin binary over the library: [`args`] parses, one module of
//! [`commands`] per subcommand calls the library and prints, [`progress`] shows how far it got.

use clap::Parser;

use args::{Cli, Command};

/// `println!` that returns an error from the calling function (all of which return
/// `anyhow::Result`) instead of panicking when standard output is a closed pipe or a full disk.
/// Every command prints its results with it.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        anyhow::Context::context(
            writeln!(std::io::stdout(), $($arg)*),
            "writing to standard output",
        )?
    }};
}

mod args;
mod cleanup;
mod commands;
mod data;
mod outputs;
mod progress;

fn main() {
    // Both before any thread starts: the environment is set, and the signal thread started.
    cleanup::prepare_runtime_dir();
    cleanup::on_signals();
    let result = run();
    cleanup::remove_runtime_dir();
    if let Err(e) = result {
        eprintln!("error: {}", message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message already
/// ends with (an I/O error names its OS message itself, and would otherwise print it twice).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Select(args) => commands::select::run(&cli, args),
        Command::Demo(args) => commands::demo::run(&cli, args),
        Command::Bench(args) => commands::bench::run(&cli, args),
        Command::Devices => commands::devices::run(),
        Command::Info(args) => commands::info::run(args),
        Command::Eval(args) => commands::eval::run(&cli, args),
        Command::Prune(args) => commands::prune::run(&cli, args),
        Command::Compare(args) => commands::compare::run(&cli, args),
    }
}
