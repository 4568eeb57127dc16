//! The `subprune` command line, a thin binary over the library: [`args`] parses, one module of
//! [`commands`] per subcommand calls the library and prints, [`progress`] shows how far it got.

use std::path::PathBuf;

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
mod commands;
mod progress;

fn main() {
    let runtime_dir = private_runtime_dir();
    let result = run();
    if let Some(dir) = runtime_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
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

/// Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" whenever a device is
/// opened without one (containers, CI, cron jobs). When it is unset or not a folder, point it at
/// a private folder (mode 0700, removed at exit), created before any thread starts.
fn private_runtime_dir() -> Option<PathBuf> {
    let current = std::env::var_os("XDG_RUNTIME_DIR");
    if current
        .as_ref()
        .is_some_and(|d| std::path::Path::new(d).is_dir())
    {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("subprune-runtime-{}", std::process::id()));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).ok()?;
    std::env::set_var("XDG_RUNTIME_DIR", &dir);
    Some(dir)
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
