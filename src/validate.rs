//! Checks of the files a run reads and writes, done before any work: an input must be a regular
//! file (a FIFO would block, `/dev/zero` would be read until memory runs out); an output must be
//! a regular file or not exist yet, must not be a folder or a read-only file, must not be the same
//! file as any input or any other output, and its folder must exist and be writable.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a file that is not a regular file is, for messages.
fn kind_of(meta: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// `role` is "input" or the option of an output (`--out`).
fn not_regular(path: &Path, meta: &Metadata, role: &str) -> Error {
    Error::InvalidArgument(format!(
        "{role} {} is {}, not a regular file; subprune {} regular files only",
        path.display(),
        kind_of(meta),
        if role == "input" { "reads" } else { "writes" }
    ))
}

/// Opens an input file for reading, refusing anything but a regular file (after following
/// links): a FIFO, a device or a socket is refused before it is opened, and the file is opened
/// non-blocking and checked again through its handle, so that a file swapped in between cannot
/// block either. Returns the file and its size.
pub fn open_input(path: &Path) -> Result<(File, u64)> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta, "input"));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta, "input"));
    }
    Ok((file, meta.len()))
}

/// Reads a whole input file ([`open_input`]'s checks first), allocating no more than its size.
pub fn read_input(path: &Path) -> Result<Vec<u8>> {
    let (file, len) = open_input(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // A file that grows while it is read is read up to the size it had.
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}

/// Checks that `out` can be written by [`crate::npy::write_atomic`] without destroying anything:
/// [`check_outputs`] with one output.
pub fn check_output_path(out: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    check_outputs(&[("output", out)], inputs)
}

/// The identity of a file: device and inode of what a path leads to (links resolved), or, for a
/// path that does not exist yet, its canonical folder and name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FileId {
    Inode(u64, u64),
    Path(PathBuf),
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_id(path: &Path) -> Option<FileId> {
    if let Ok(meta) = std::fs::metadata(path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            return Some(FileId::Inode(meta.dev(), meta.ino()));
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            return std::fs::canonicalize(path).ok().map(FileId::Path);
        }
    }
    let folder = std::fs::canonicalize(folder_of(path)).ok()?;
    Some(FileId::Path(folder.join(path.file_name()?)))
}

/// Checks, before any work, that every output (`(name, path)` pairs; the name is used in
/// messages, e.g. `--out`) can be written by [`crate::npy::write_atomic`] without destroying
/// anything: it is a regular file or does not exist yet (a device, FIFO or socket would be
/// replaced), is not a folder or a read-only file, is not the same file as any of `inputs` or as
/// another output (by identity: device and inode after resolving links, so `./o.onnx`, `o.onnx`,
/// a symbolic link and a hard link all compare equal), and a file can be created in its folder.
/// Creates and removes one empty temporary file per output folder.
pub fn check_outputs(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<()> {
    let input_ids: Vec<(&str, &Path, FileId)> = inputs
        .iter()
        .filter_map(|&(name, p)| Some((name, p, file_id(p)?)))
        .collect();
    let mut seen: Vec<(&str, &Path, Option<FileId>)> = Vec::new();
    for &(name, out) in outputs {
        check_one_output(name, out)?;
        let id = file_id(out);
        if let Some(id) = &id {
            if let Some((input, path, _)) = input_ids.iter().find(|(_, _, i)| i == id) {
                return Err(Error::InvalidArgument(format!(
                    "{name} {} is the same file as the {input} {}; writing it would destroy the \
                     {input}: choose another output path",
                    out.display(),
                    path.display()
                )));
            }
        }
        if let Some((other, path, _)) = seen
            .iter()
            .find(|(_, p, i)| (id.is_some() && *i == id) || *p == out)
        {
            return Err(Error::InvalidArgument(format!(
                "{name} {} and {other} {} are the same file; give them different paths",
                out.display(),
                path.display()
            )));
        }
        seen.push((name, out, id));
    }
    Ok(())
}

/// The checks of one output on its own: a file path, not a folder, not a special file, not
/// read-only, in a folder that exists and is writable.
fn check_one_output(name: &str, out: &Path) -> Result<()> {
    let text = out.as_os_str().to_string_lossy();
    if text.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{name}: the output path is empty"
        )));
    }
    let looks_like_folder = text.ends_with(std::path::MAIN_SEPARATOR) || text.ends_with('/');
    if looks_like_folder || out.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{name} {} is a folder; give a file name, e.g. {}",
            out.display(),
            out.join("pruned.npy").display()
        )));
    }
    if let Ok(meta) = std::fs::metadata(out) {
        if !meta.is_file() {
            return Err(not_regular(out, &meta, name));
        }
        if meta.permissions().readonly() {
            return Err(Error::InvalidArgument(format!(
                "{name} {} exists and is read-only; subprune does not replace read-only files: \
                 remove it, make it writable, or choose another path",
                out.display()
            )));
        }
    }
    let folder = folder_of(out);
    if !folder.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "the folder of {name} {} does not exist ({})",
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
