//! Reading and writing NumPy `.npy` files (format 1.0–3.0): little-endian f32 arrays, read and
//! written; uint8 images and int64 labels, read; labels of any little-endian integer dtype read
//! as int64 ([`read_labels`]).
//! Anything else (another dtype, Fortran order, a truncated file) is a clear error naming the file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

const MAGIC: &[u8] = b"\x93NUMPY";

fn npy_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a C-ordered little-endian f32 `.npy` file straight into the tensor's storage: the file
/// is never held twice in memory, and nothing larger than the file is allocated.
pub fn read_f32(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let (mut file, file_len) = crate::validate::open_input(path)?;
    // The fixed part (magic, version, header length), then the header, whose claimed length is
    // checked against the file's before anything that size is allocated.
    let mut head = Vec::with_capacity(12);
    (&mut file).take(12).read_to_end(&mut head).map_err(io)?;
    let (header_start, header_len) = header_span(path, &head)?;
    let data_start = header_start as u64 + header_len as u64;
    if data_start > file_len {
        return Err(npy_err(path, "truncated .npy header"));
    }
    // The 12 bytes read may reach into the header; reread from its start.
    file.seek(SeekFrom::Start(header_start as u64))
        .map_err(io)?;
    let mut header = vec![0u8; header_len];
    file.read_exact(&mut header).map_err(io)?;
    let Header {
        descr,
        shape,
        count,
    } = parse_header(path, &header)?;
    check_f32(path, &descr)?;
    let payload_len = file_len - data_start;
    check_payload(path, &shape, count * 4, payload_len)?;
    let mut data = vec![0.0f32; count];
    file.read_exact(bytemuck::cast_slice_mut(&mut data))
        .map_err(io)?;
    from_le_in_place(&mut data);
    Ok(Tensor { shape, data })
}

/// Parses the bytes of a little-endian f32 `.npy` file; `path` only names it in errors.
pub fn parse_f32(path: &Path, bytes: &[u8]) -> Result<Tensor> {
    let raw = parse_raw(path, bytes)?;
    check_f32(path, &raw.descr)?;
    let data = raw
        .payload
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Tensor {
        shape: raw.shape,
        data,
    })
}

/// The contents of a `.npy` file of one of the dtypes subprune reads.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyArray {
    /// `<f4`: float32.
    F32(Tensor),
    /// `|u1`: uint8 (raw pixels).
    U8 {
        /// Dimensions, outermost first.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<u8>,
    },
    /// `<i8`: int64 (labels).
    I64 {
        /// Dimensions, outermost first.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<i64>,
    },
}

impl NpyArray {
    /// The array's dimensions.
    pub fn shape(&self) -> &[usize] {
        match self {
            NpyArray::F32(t) => &t.shape,
            NpyArray::U8 { shape, .. } | NpyArray::I64 { shape, .. } => shape,
        }
    }

    /// The dtype as NumPy writes it.
    pub fn dtype(&self) -> &'static str {
        match self {
            NpyArray::F32(_) => "float32",
            NpyArray::U8 { .. } => "uint8",
            NpyArray::I64 { .. } => "int64",
        }
    }
}

/// Reads a C-ordered `.npy` file of dtype float32, uint8 or little-endian int64.
pub fn read_any(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    parse_any(path, &bytes)
}

/// Parses the bytes of a float32, uint8 or int64 `.npy` file; `path` only names it in errors.
pub fn parse_any(path: &Path, bytes: &[u8]) -> Result<NpyArray> {
    let raw = parse_raw(path, bytes)?;
    match raw.descr.as_str() {
        "<f4" | "=f4" => parse_f32(path, bytes).map(NpyArray::F32),
        "|u1" | "<u1" | "=u1" => Ok(NpyArray::U8 {
            shape: raw.shape,
            data: raw.payload.to_vec(),
        }),
        "<i8" | "=i8" => Ok(NpyArray::I64 {
            data: raw
                .payload
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect(),
            shape: raw.shape,
        }),
        other => Err(npy_err(
            path,
            format!(
                "dtype is '{other}'; expected float32 ('<f4'), uint8 ('|u1') or int64 ('<i8'); \
                 convert images with arr.astype(np.float32)"
            ),
        )),
    }
}

/// Reads a C-ordered little-endian int64 `.npy` file (labels), as `(shape, values)`.
pub fn read_i64(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<i64>)> {
    let path = path.as_ref();
    match read_any(path)? {
        NpyArray::I64 { shape, data } => Ok((shape, data)),
        other => Err(npy_err(
            path,
            format!("dtype is {}, expected int64 ('<i8')", other.dtype()),
        )),
    }
}

/// Reads class labels: a C-ordered `.npy` file of any little-endian integer dtype (int8 to int64,
/// uint8 to uint64: `np.save` of labels keeps whatever dtype they had, uint8 for MNIST's raw
/// files, int32 on some platforms), of shape `(N,)` or `(N, 1)`, widened to int64. Anything else is
/// an error naming the file: a float dtype, another shape (a file of images by mistake), a uint64
/// value above `i64::MAX`.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<i64>> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    parse_labels(path, &bytes)
}

/// Parses the bytes of a labels `.npy` file (see [`read_labels`]); `path` only names it in errors.
pub fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<i64>> {
    let raw = parse_raw(path, bytes)?;
    let Some((signed, size)) = int_dtype(&raw.descr) else {
        return Err(npy_err(
            path,
            format!(
                "labels of dtype '{}': expected integer class indices (e.g. int64 '<i8'); \
                 convert with arr.astype(np.int64)",
                raw.descr
            ),
        ));
    };
    if !(raw.shape.len() == 1 || (raw.shape.len() == 2 && raw.shape[1] == 1)) {
        return Err(npy_err(
            path,
            format!(
                "labels of shape {:?}: expected one class index per image, shape (N,) or (N, 1)",
                raw.shape
            ),
        ));
    }
    raw.payload
        .chunks_exact(size)
        .enumerate()
        .map(|(i, c)| {
            let mut le = [0u8; 8];
            le[..size].copy_from_slice(c);
            if signed && c[size - 1] & 0x80 != 0 {
                le[size..].fill(0xff); // sign extension
            }
            let v = u64::from_le_bytes(le);
            if !signed && v > i64::MAX as u64 {
                return Err(npy_err(
                    path,
                    format!("label {v} of image {i} is out of range"),
                ));
            }
            Ok(v as i64)
        })
        .collect()
}

/// `(signed, bytes)` of a little-endian (or single-byte) integer dtype.
fn int_dtype(descr: &str) -> Option<(bool, usize)> {
    let mut chars = descr.chars();
    let (order, k) = (chars.next()?, chars.next()?);
    let size = chars.as_str().parse::<usize>().ok()?;
    let signed = match k {
        'i' => true,
        'u' => false,
        _ => return None,
    };
    let ok_order = matches!(order, '<' | '=') || (order == '|' && size == 1);
    (ok_order && matches!(size, 1 | 2 | 4 | 8)).then_some((signed, size))
}

/// The whole file (a regular file only), an I/O error naming it.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    crate::validate::read_input(path)
}

/// A parsed header and the payload it describes.
struct RawNpy<'a> {
    descr: String,
    shape: Vec<usize>,
    payload: &'a [u8],
}

/// Item size in bytes of the dtypes subprune reads; `None` for others, which the typed parsers
/// reject by name.
fn item_size(descr: &str) -> Option<usize> {
    match descr {
        "<f4" | "=f4" => Some(4),
        other => int_dtype(other).map(|(_, size)| size),
    }
}

fn parse_raw<'a>(path: &Path, bytes: &'a [u8]) -> Result<RawNpy<'a>> {
    let (header_start, header_len) = header_span(path, bytes)?;
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        return Err(npy_err(path, "truncated .npy header"));
    }
    let Header {
        descr,
        shape,
        count,
    } = parse_header(path, &bytes[header_start..data_start])?;
    let payload = &bytes[data_start..];
    // An unknown dtype is named by the typed parser; its size is not checked here.
    if let Some(item) = item_size(&descr) {
        check_payload(path, &shape, count * item, payload.len() as u64)?;
    }
    Ok(RawNpy {
        descr,
        shape,
        payload,
    })
}

/// Checks the magic string and version of a `.npy` file's first bytes (at least the first 12
/// when the file has them) and returns where the header starts and its length.
fn header_span(path: &Path, bytes: &[u8]) -> Result<(usize, usize)> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(npy_err(path, "not a .npy file (bad magic string)"));
    }
    match bytes[6] {
        1 => Ok((10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize)),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(npy_err(path, "truncated .npy header"));
            }
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
            Ok((12, len))
        }
        v => Err(npy_err(
            path,
            format!("unsupported .npy format version {v}"),
        )),
    }
}

/// What a `.npy` header says.
struct Header {
    /// The dtype, e.g. `<f4`.
    descr: String,
    shape: Vec<usize>,
    /// Elements, checked so that their size in bytes (of a dtype subprune reads) fits `usize`.
    count: usize,
}

/// Parses the header text (a Python dict literal): dtype, order (C order only) and shape.
fn parse_header(path: &Path, header: &[u8]) -> Result<Header> {
    let header = std::str::from_utf8(header).map_err(|_| npy_err(path, "header is not text"))?;
    // A repeated key is ambiguous (Python's dict keeps the last, a reader may take the first).
    for key in ["descr", "fortran_order", "shape"] {
        let times = header.matches(&format!("'{key}'")).count()
            + header.matches(&format!("\"{key}\"")).count();
        if times > 1 {
            return Err(npy_err(
                path,
                format!("header gives the key '{key}' {times} times; each key must appear once"),
            ));
        }
    }
    let descr =
        dict_value(header, "descr").ok_or_else(|| npy_err(path, "header has no 'descr'"))?;
    let descr = descr
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .to_string();
    let fortran = dict_value(header, "fortran_order")
        .ok_or_else(|| npy_err(path, "header has no 'fortran_order'"))?;
    if fortran.trim() != "False" {
        return Err(npy_err(
            path,
            "Fortran-ordered array; save a C-ordered one (np.ascontiguousarray)",
        ));
    }
    let shape_text =
        dict_value(header, "shape").ok_or_else(|| npy_err(path, "header has no 'shape'"))?;
    let inner = shape_text
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| npy_err(path, format!("malformed shape {shape_text}")))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| npy_err(path, format!("malformed shape {shape_text}")))?;
    // Checked: a malformed header can claim a shape whose size overflows usize.
    let item = item_size(&descr).unwrap_or(1);
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|c| c.checked_mul(item).is_some())
        .ok_or_else(|| npy_err(path, format!("shape {shape:?} is too large")))?;
    Ok(Header {
        descr,
        shape,
        count,
    })
}

/// Fails unless `descr` is little-endian float32.
fn check_f32(path: &Path, descr: &str) -> Result<()> {
    if descr == "<f4" || descr == "=f4" {
        return Ok(());
    }
    Err(npy_err(
        path,
        format!("dtype is '{descr}', expected little-endian float32 ('<f4'); convert with arr.astype(np.float32)"),
    ))
}

/// Checks that the data after the header holds exactly the `bytes` the shape needs.
fn check_payload(path: &Path, shape: &[usize], bytes: usize, payload_len: u64) -> Result<()> {
    if payload_len != bytes as u64 {
        return Err(npy_err(
            path,
            format!("shape {shape:?} needs {bytes} data bytes, file has {payload_len}"),
        ));
    }
    Ok(())
}

/// Turns little-endian f32 values read as raw bytes into native ones (a no-op on little-endian
/// machines).
fn from_le_in_place(data: &mut [f32]) {
    if cfg!(target_endian = "big") {
        for v in data {
            *v = f32::from_bits(u32::from_le(v.to_bits()));
        }
    }
}

/// The text after `'key':` in a Python dict literal, up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[pos + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?;
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

/// Serializes a tensor as a version-1.0 `.npy` file.
pub fn to_bytes(tensor: &Tensor) -> Vec<u8> {
    let shape = match tensor.shape.len() {
        1 => format!("({},)", tensor.shape[0]),
        _ => format!(
            "({})",
            tensor
                .shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, header ending in '\n'.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + tensor.data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in &tensor.data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a tensor to `path` atomically: a temporary file in the same folder, then a rename.
pub fn write_f32(path: impl AsRef<Path>, tensor: &Tensor) -> Result<()> {
    write_atomic(path.as_ref(), &to_bytes(tensor))
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename, so that a reader never
/// sees a half-written file and a failure leaves any previous file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_all_atomic(&[(path, bytes)])
}

/// Temporary files being written now, removed by [`remove_temporaries`] (a signal handler's job).
static LIVE_TEMPORARIES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn live_temporaries() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE_TEMPORARIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes the temporary files [`write_all_atomic`] is writing now, and keeps any from being
/// created or renamed afterwards: meant to be called once, just before the process exits on a
/// signal (SIGINT, SIGTERM), so that an interrupted write leaves neither a temporary nor a
/// half-replaced set of outputs.
pub fn remove_temporaries() {
    let live = live_temporaries();
    for tmp in live.iter() {
        let _ = std::fs::remove_file(tmp);
    }
    // Held until the process exits: a writer blocks before its next temporary or rename.
    std::mem::forget(live);
}

/// The temporary sibling of `path` this process writes: `.NAME.tmpPID`.
fn temporary_for(path: &Path) -> Result<PathBuf> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} is not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    Ok(path.with_file_name(tmp_name))
}

/// Whether process `pid` is running (Linux: `/proc/PID`); `true` where that cannot be told.
fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes temporaries of `path` (`.NAME.tmpPID`) left by runs of subprune that were killed
/// (their process is gone); another run's live temporary is left alone.
fn sweep_stale_temporaries(path: &Path) {
    let (Some(name), folder) = (path.file_name(), path.parent()) else {
        return;
    };
    let folder = match folder {
        Some(f) if !f.as_os_str().is_empty() => f,
        _ => Path::new("."),
    };
    let prefix = format!(".{}.tmp", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let entry_name = entry.file_name();
        let Some(pid) = entry_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if regular && pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Set (to a FIFO's path) only by the tests of interrupted writes: after the temporaries are
/// written and before they are renamed, the write opens the FIFO and reads it to its end, so a
/// test can signal the process at exactly that point.
const HOLD_ENV: &str = "SUBPRUNE_TEST_HOLD_BEFORE_RENAME";

/// Writes several files as one: every target is checked (a regular file or absent, not
/// read-only), then every temporary sibling (`.NAME.tmpPID`) is written and synced, then all are
/// renamed over their targets. A failure before the renames leaves every previous file intact and
/// no temporary behind. Stale temporaries of the same names left by killed runs are removed
/// first. Renames within one folder do not fail short of the folder vanishing.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut plan = Vec::with_capacity(files.len());
    for &(path, bytes) in files {
        let tmp = temporary_for(path)?;
        // An existing file keeps its permissions; a read-only one is not replaced (the rename
        // would succeed, since it needs only the folder to be writable), nor a device or FIFO.
        let existing = std::fs::metadata(path).ok();
        if let Some(meta) = &existing {
            if !meta.is_file() {
                return Err(Error::InvalidArgument(format!(
                    "{} exists and is not a regular file (a device, FIFO or socket); not replacing it",
                    path.display()
                )));
            }
            if meta.permissions().readonly() {
                return Err(Error::InvalidArgument(format!(
                    "{} exists and is read-only; not replacing it",
                    path.display()
                )));
            }
        }
        plan.push((path, bytes, tmp, existing));
    }
    for (path, ..) in &plan {
        sweep_stale_temporaries(path);
    }
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| {
        for (path, bytes, tmp, existing) in &plan {
            live_temporaries().push(tmp.clone());
            written.push(tmp.clone());
            let io = |source| Error::Io {
                path: path.to_path_buf(),
                source,
            };
            let mut f = std::fs::File::create(tmp).map_err(io)?;
            f.write_all(bytes).map_err(io)?;
            if let Some(meta) = existing {
                f.set_permissions(meta.permissions()).map_err(io)?;
            }
            f.sync_all().map_err(io)?;
        }
        if let Some(fifo) = std::env::var_os(HOLD_ENV) {
            let _ = std::fs::read(fifo);
        }
        let live = live_temporaries();
        for (path, _, tmp, _) in &plan {
            std::fs::rename(tmp, path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        drop(live);
        Ok(())
    })();
    if result.is_err() {
        for tmp in &written {
            let _ = std::fs::remove_file(tmp);
        }
    }
    live_temporaries().retain(|t| !written.contains(t));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_shape_and_values() {
        let t = Tensor::new(vec![2, 3, 1], vec![1.0, -2.5, 3.0, 0.0, 1e-8, 7.0]).unwrap();
        let back = parse_f32(Path::new("mem"), &to_bytes(&t)).unwrap();
        assert_eq!(back, t);
        let v = Tensor::new(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(parse_f32(Path::new("mem"), &to_bytes(&v)).unwrap(), v);
    }

    #[test]
    fn rejects_other_dtypes_and_truncation() {
        let t = Tensor::new(vec![2], vec![1.0, 2.0]).unwrap();
        let mut bytes = to_bytes(&t);
        // Byte-level edit: the magic string is not UTF-8, so a lossy text round trip would break it.
        let mut f8 = bytes.clone();
        let at = f8.windows(3).position(|w| w == b"<f4").unwrap();
        f8[at..at + 3].copy_from_slice(b"<f8");
        let err = parse_f32(Path::new("x.npy"), &f8).unwrap_err().to_string();
        assert!(err.contains("x.npy") && err.contains("<f8"), "{err}");
        bytes.pop();
        let err = parse_f32(Path::new("x.npy"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("data bytes"), "{err}");
        let err = parse_f32(Path::new("x.npy"), b"hello world")
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic"), "{err}");
    }
}
