//! What a run leaves behind, and how it is kept to nothing: the private runtime folder Mesa
//! needs (created only when a GPU adapter is looked for, removed at exit), and the temporaries of
//! an interrupted write (removed on SIGINT/SIGTERM).

use std::path::PathBuf;
use std::sync::Mutex;

/// The runtime folder this process points `XDG_RUNTIME_DIR` at, if it had to; created on first
/// use by [`ensure_runtime_dir`].
static RUNTIME_DIR: Mutex<Option<(PathBuf, bool)>> = Mutex::new(None);

fn runtime_dir() -> std::sync::MutexGuard<'static, Option<(PathBuf, bool)>> {
    RUNTIME_DIR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const RUNTIME_PREFIX: &str = "subprune-runtime-";

/// Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" whenever a device is
/// opened without one (containers, CI, cron jobs). When it is unset or not a folder, point it at
/// a private folder `subprune-runtime-PID` in the temporary directory: the variable is set here,
/// before any thread starts, and the folder is created only by [`ensure_runtime_dir`], when a
/// GPU adapter is looked for.
pub fn prepare_runtime_dir() {
    let current = std::env::var_os("XDG_RUNTIME_DIR");
    if current
        .as_ref()
        .is_some_and(|d| std::path::Path::new(d).is_dir())
    {
        return;
    }
    let dir = std::env::temp_dir().join(format!("{RUNTIME_PREFIX}{}", std::process::id()));
    std::env::set_var("XDG_RUNTIME_DIR", &dir);
    *runtime_dir() = Some((dir, false));
}

/// Creates the private runtime folder (mode 0700) if [`prepare_runtime_dir`] chose one; called
/// before wgpu looks for adapters. Also removes such folders left by runs that were killed.
pub fn ensure_runtime_dir() {
    let mut guard = runtime_dir();
    let Some((dir, created)) = guard.as_mut() else {
        return;
    };
    if *created {
        return;
    }
    sweep_stale_runtime_dirs();
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    *created = builder.create(&*dir).is_ok();
}

/// Removes the private runtime folder if it was created.
pub fn remove_runtime_dir() {
    if let Some((dir, true)) = runtime_dir().take() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes `subprune-runtime-PID` folders in the temporary directory whose process is gone and
/// that belong to this user (Linux: `/proc/PID`).
fn sweep_stale_runtime_dirs() {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUNTIME_PREFIX))
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                m.is_dir() && m.uid() == current_uid()
            }
            #[cfg(not(unix))]
            {
                m.is_dir()
            }
        });
        if ours && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// This process's user id, read from the owner of `/proc/self` (no `unsafe` call needed).
#[cfg(unix)]
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// Starts a thread that, on SIGINT or SIGTERM, removes the temporaries of any write in progress
/// and the runtime folder, then exits with 128 + the signal number, as the shell reports a
/// process killed by it. Signals are received by the thread, not in a handler, so the cleanup may
/// take locks and touch the file system.
pub fn on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            subprune::npy::remove_temporaries();
            remove_runtime_dir();
            std::process::exit(128 + signal);
        }
    });
}
