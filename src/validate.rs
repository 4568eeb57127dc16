//! Checks of output paths, done before any work: an output must not be one of the inputs, must
//! not be a folder or a read-only file, and its folder must exist and be writable.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Checks that `out` can be written by [`crate::npy::write_atomic`] without destroying anything:
/// it is not a folder, not a read-only file, not the same file (path, symbolic link or hard
/// link) as any of `inputs` (`(name, path)` pairs, the name used in the message), and a file can
/// be created in its folder. Creates and removes one empty temporary file there.
pub fn check_output_path(out: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    let text = out.as_os_str().to_string_lossy();
    if text.is_empty() {
        return Err(Error::InvalidArgument("the output path is empty".into()));
    }
    let looks_like_folder = text.ends_with(std::path::MAIN_SEPARATOR) || text.ends_with('/');
    if looks_like_folder || out.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "output {} is a folder; give a file name, e.g. {}",
            out.display(),
            out.join("pruned.npy").display()
        )));
    }
    if let Ok(meta) = std::fs::metadata(out) {
        for (name, input) in inputs {
            if same_file(out, &meta, input) {
                return Err(Error::InvalidArgument(format!(
                    "output {} is the same file as the {name} {}; writing it would destroy the \
                     {name}: choose another output path",
                    out.display(),
                    input.display()
                )));
            }
        }
        if meta.permissions().readonly() {
            return Err(Error::InvalidArgument(format!(
                "output {} exists and is read-only; subprune does not replace read-only files: \
                 remove it, make it writable, or choose another path",
                out.display()
            )));
        }
    }
    let folder = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !folder.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "the folder of output {} does not exist ({})",
            out.display(),
            folder.display()
        )));
    }
    // A file created and removed at once: the only reliable test of writability (permissions,
    // read-only mounts, ACLs).
    let probe = folder.join(format!(".subprune-probe.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|source| Error::Io {
            path: folder.clone(),
            source,
        })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Whether `input` is the same file as `out` (whose metadata is `out_meta`).
fn same_file(out: &Path, out_meta: &std::fs::Metadata, input: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = out;
        match std::fs::metadata(input) {
            Ok(m) => m.dev() == out_meta.dev() && m.ino() == out_meta.ino(),
            Err(_) => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = out_meta;
        match (std::fs::canonicalize(out), std::fs::canonicalize(input)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

/// Index of the first value that is NaN or infinite, searched in parallel on large slices.
pub fn first_non_finite<T: num_like::Float>(values: &[T]) -> Option<usize> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    // Whole chunks scanned with a branch-free fold (vectorised), the first bad chunk searched.
    let bad = |c: &[T]| !c.iter().fold(true, |ok, v| ok & v.finite());
    let chunk = if values.len() <= CHUNK {
        bad(values).then_some(0)
    } else {
        values.par_chunks(CHUNK).position_first(bad)
    }?;
    let start = chunk * CHUNK;
    values[start..]
        .iter()
        .position(|v| !v.finite())
        .map(|i| start + i)
}

/// The float types [`first_non_finite`] takes.
pub mod num_like {
    /// An f32 or f64.
    pub trait Float: Copy + Send + Sync {
        /// Neither NaN nor infinite.
        fn finite(&self) -> bool;
    }
    impl Float for f32 {
        fn finite(&self) -> bool {
            self.is_finite()
        }
    }
    impl Float for f64 {
        fn finite(&self) -> bool {
            self.is_finite()
        }
    }
}
