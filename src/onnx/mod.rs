//! ONNX files ↔ the IR ([`crate::ir`]): reading (`load.rs`: [`inputs`], [`opset`], [`fold`],
//! [`import`]) and writing ([`export`]), nothing else.
//!
//! The protobuf types in [`proto`] are generated once from the vendored `proto/onnx-ml.proto`
//! (ONNX 1.19.1, a superset of `onnx.proto`) by `tools/onnx-proto-gen` (protox + prost-build, no
//! system `protoc`) and committed. Every field that file defines is decoded and kept; prost drops
//! fields it does not know (from a newer ONNX), so those are not written back.

pub mod export;
pub mod fold;
pub mod import;
pub mod inputs;
pub mod load;
pub mod opset;
#[allow(missing_docs, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
pub mod proto;
pub mod supported;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use export::{save, to_bytes, ExternalData, SaveOptions};
pub use inputs::{InputShape, LoadOptions};
pub use load::{load, load_bytes, load_bytes_with, load_with};

use crate::error::{Error, Result};
use crate::ir::{ConstData, Constant, Graph, Op};
use proto::tensor_proto::{DataLocation, DataType};

/// A model read from an ONNX file: the IR, plus what is needed to write it back faithfully (the
/// original protobuf, and which IR node and initializer came from where).
#[derive(Clone, Debug)]
pub struct OnnxModel {
    /// The IR; edit it, then [`save`].
    pub graph: Graph,
    /// The original model, external data already read into `raw_data`.
    pub(crate) proto: proto::ModelProto,
    /// Files this model was read from (the model and its external data), canonical; never
    /// written over.
    pub(crate) sources: Vec<PathBuf>,
    /// Node name → (index in the original graph, op and input/output names as imported).
    pub(crate) node_origin: HashMap<String, NodeOrigin>,
    /// Initializer name → index in the original graph.
    pub(crate) initializer_origin: HashMap<String, usize>,
    /// The default-domain opset the model imports.
    pub opset: i64,
}

/// Where an IR node came from, to write it back untouched when it has not changed.
#[derive(Clone, Debug)]
pub(crate) struct NodeOrigin {
    pub index: usize,
    pub op: Op,
    pub inputs: Vec<Option<String>>,
    pub outputs: Vec<String>,
    /// For a node folded into a constant at load: the value it had then (the node is written
    /// back as it was while the value is unchanged).
    pub folded: Option<Constant>,
}

impl OnnxModel {
    /// The files the model was read from (model first, then external data files).
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// `producer_name producer_version` of the original file.
    pub fn producer(&self) -> String {
        format!(
            "{} {}",
            self.proto.producer_name.as_deref().unwrap_or(""),
            self.proto.producer_version.as_deref().unwrap_or("")
        )
        .trim()
        .to_string()
    }
}

/// The opsets of the default domain this crate reads and writes.
/// Older ones are normalised at import ([`opset`]); the written model keeps the file's opset.
pub const SUPPORTED_OPSETS: std::ops::RangeInclusive<i64> = opset::OLDEST_OPSET..=21;

/// The attribute `name` of `node`, if it has one.
pub(crate) fn attribute<'a>(
    node: &'a proto::NodeProto,
    name: &str,
) -> Option<&'a proto::AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

fn tensor_name(t: &proto::TensorProto) -> &str {
    t.name.as_deref().unwrap_or("<unnamed tensor>")
}

/// Decodes a tensor's values (its external data, if any, already in `raw_data`).
pub(crate) fn decode_tensor(t: &proto::TensorProto) -> std::result::Result<Constant, String> {
    let name = tensor_name(t);
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor '{name}' has dimension {d}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("tensor '{name}' dimensions {dims:?} overflow"))?;
    if t.data_location == Some(DataLocation::External as i32) && t.raw_data.is_none() {
        return Err(format!("tensor '{name}': external data was not loaded"));
    }
    let dtype = t.data_type.unwrap_or(0);
    let raw = t.raw_data.as_deref();
    let check = |len: usize| {
        if len == count {
            Ok(())
        } else {
            Err(format!(
                "tensor '{name}' of shape {dims:?} needs {count} values, has {len}"
            ))
        }
    };
    let data = if dtype == DataType::Float as i32 {
        let v: Vec<f32> = match raw {
            Some(b) => {
                if b.len() % 4 != 0 {
                    return Err(format!("tensor '{name}': raw_data of {} bytes", b.len()));
                }
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect()
            }
            None => t.float_data.clone(),
        };
        check(v.len())?;
        ConstData::F32(v)
    } else if dtype == DataType::Int64 as i32 {
        let v: Vec<i64> = match raw {
            Some(b) => {
                if b.len() % 8 != 0 {
                    return Err(format!("tensor '{name}': raw_data of {} bytes", b.len()));
                }
                b.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect()
            }
            None => t.int64_data.clone(),
        };
        check(v.len())?;
        ConstData::I64(v)
    } else if dtype == DataType::Int32 as i32 {
        let v: Vec<i64> = match raw {
            Some(b) => {
                if b.len() % 4 != 0 {
                    return Err(format!("tensor '{name}': raw_data of {} bytes", b.len()));
                }
                b.chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                    .collect()
            }
            None => t.int32_data.iter().map(|&v| v as i64).collect(),
        };
        check(v.len())?;
        ConstData::I64(v)
    } else {
        let kind = DataType::try_from(dtype)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| dtype.to_string());
        return Err(format!(
            "tensor '{name}' has element type {kind}; only FLOAT, INT64 and INT32 are supported"
        ));
    };
    Ok(Constant { dims, data })
}

/// Encodes a constant as a tensor with little-endian `raw_data`.
pub(crate) fn encode_tensor(name: &str, c: &Constant) -> proto::TensorProto {
    let (data_type, raw) = match &c.data {
        ConstData::F32(v) => (
            DataType::Float,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        ConstData::I64(v) => (
            DataType::Int64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    };
    proto::TensorProto {
        dims: c.dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type as i32),
        name: Some(name.to_string()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// Looks up `key` in a tensor's `external_data` entries.
fn external_entry<'a>(t: &'a proto::TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key.as_deref() == Some(key))
        .and_then(|e| e.value.as_deref())
}

/// A relative path inside the model's folder (ONNX forbids absolute paths and `..`).
fn checked_location(model: &Path, location: &str) -> Result<PathBuf> {
    let rel = Path::new(location);
    let bad = rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if location.is_empty() || bad {
        return Err(Error::Onnx {
            path: model.to_path_buf(),
            reason: format!(
                "external data location '{location}' must be a relative path inside the model's folder"
            ),
        });
    }
    Ok(model.parent().unwrap_or(Path::new(".")).join(rel))
}

/// Opens an external data file: neither it nor any folder between the model's folder and it may
/// be a symbolic link (onnx's own loader refuses links too: one could lead outside the model's
/// folder), and it must be a regular file ([`crate::validate::open_input`]).
fn open_external(model_path: &Path, location: &str, file: &Path) -> Result<(std::fs::File, u64)> {
    let base = model_path.parent().unwrap_or(Path::new("."));
    let mut walked = base.to_path_buf();
    for part in Path::new(location).components() {
        walked.push(part);
        if std::fs::symlink_metadata(&walked).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::Onnx {
                path: model_path.to_path_buf(),
                reason: format!(
                    "external data location '{location}': {} is a symbolic link; external data \
                     is read only from regular files inside the model's folder, not through links",
                    walked.display()
                ),
            });
        }
    }
    crate::validate::open_input(file).map_err(|e| Error::Onnx {
        path: model_path.to_path_buf(),
        reason: format!("cannot read external data file {}: {e}", file.display()),
    })
}

/// Reads every external tensor's bytes into its `raw_data` (clearing the external reference) and
/// returns the data files read. Each tensor's bytes are read at its offset and length only, after
/// checking them against the file's size: nothing beyond what the file holds is allocated.
pub(crate) fn load_external(
    model_path: &Path,
    tensors: &mut [&mut proto::TensorProto],
) -> Result<Vec<PathBuf>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut files: HashMap<PathBuf, (std::fs::File, u64)> = HashMap::new();
    for t in tensors.iter_mut() {
        if t.data_location != Some(DataLocation::External as i32) {
            continue;
        }
        let name = tensor_name(t).to_string();
        let location = external_entry(t, "location").ok_or_else(|| Error::Onnx {
            path: model_path.to_path_buf(),
            reason: format!("tensor '{name}' is external but has no 'location'"),
        })?;
        let file = checked_location(model_path, location)?;
        let parse = |key: &str| -> Result<Option<u64>> {
            external_entry(t, key)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| Error::Onnx {
                        path: model_path.to_path_buf(),
                        reason: format!(
                            "tensor '{name}': external data {key} '{v}' is not a number"
                        ),
                    })
                })
                .transpose()
        };
        let offset = parse("offset")?.unwrap_or(0);
        let length = parse("length")?;
        if !files.contains_key(&file) {
            let opened = open_external(model_path, location, &file)?;
            files.insert(file.clone(), opened);
        }
        let (handle, size) = files.get_mut(&file).expect("inserted above");
        let size = *size;
        let end = match length {
            Some(l) => offset.checked_add(l),
            None => Some(size),
        };
        let len = end
            .filter(|&e| e <= size && offset <= e)
            .and_then(|e| usize::try_from(e - offset).ok())
            .ok_or_else(|| Error::Onnx {
                path: file.clone(),
                reason: format!(
                    "tensor '{name}': external data at offset {offset}, length {length:?} lies past the end of the file ({size} bytes)"
                ),
            })?;
        let mut bytes = vec![0u8; len];
        handle
            .seek(SeekFrom::Start(offset))
            .and_then(|_| handle.read_exact(&mut bytes))
            .map_err(|e| Error::Onnx {
                path: file.clone(),
                reason: format!("tensor '{name}': reading its external data: {e}"),
            })?;
        t.raw_data = Some(bytes);
        t.data_location = None;
        t.external_data.clear();
    }
    Ok(files
        .into_keys()
        .map(|f| std::fs::canonicalize(&f).unwrap_or(f))
        .collect())
}
