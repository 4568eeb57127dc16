//! The shapes of a model's graph inputs: fixed in the file, given by the caller
//! ([`LoadOptions`], the CLI's `--input-shape`), or taken from the data the model will run on.
//! Exporters mark height and width dynamic by default; the IR needs them fixed (its shapes are
//! fixed but for the batch), so a dynamic dimension must be given one way or the other.

use std::str::FromStr;

use super::proto;
use crate::error::{Error, Result};
use crate::ir::{Dim, Shape};

/// A shape given for a graph input, every dimension including the batch (which stays symbolic:
/// the model runs on any number of images).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputShape {
    /// The input it is for; `None` for a model's only input.
    pub name: Option<String>,
    /// The dimensions, the batch first.
    pub dims: Vec<usize>,
}

impl FromStr for InputShape {
    type Err = String;

    /// `1,3,320,320` or `NAME:1,3,320,320` (the last `:` separates: names may hold `:`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (name, dims) = match s.rsplit_once(':') {
            Some((n, d)) if !n.is_empty() => (Some(n.to_string()), d),
            _ => (None, s),
        };
        let dims = dims
            .split(',')
            .map(|d| d.trim().parse::<usize>().ok().filter(|&v| v > 0))
            .collect::<Option<Vec<_>>>()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                format!("input shape '{s}': expected positive sizes like 1,3,320,320 or NAME:1,3,320,320")
            })?;
        Ok(InputShape { name, dims })
    }
}

/// Options of [`crate::onnx::load_with`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Shapes that fix the inputs' dynamic dimensions (as onnxsim's `--overwrite-input-shape`);
    /// a dimension the file fixes must agree.
    pub input_shapes: Vec<InputShape>,
    /// The shape of the data the model will run on (the image count first): fills the dynamic
    /// dimensions of a model's only input where `input_shapes` gives none.
    pub data_shape: Option<Vec<usize>>,
}

/// The file's dimensions of a graph input: `Some(size)` where fixed, `None` where symbolic or
/// unset, with the symbolic names for messages.
fn file_dims(vi: &proto::ValueInfoProto) -> Result<Vec<(Option<usize>, String)>> {
    use proto::tensor_shape_proto::dimension::Value as D;
    use proto::type_proto::Value as T;
    let name = vi.name.as_deref().unwrap_or("");
    let tensor = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(T::TensorType(t)) => t,
        _ => {
            return Err(Error::Shape(format!(
                "graph input '{name}' is not a tensor"
            )))
        }
    };
    if tensor.elem_type != Some(proto::tensor_proto::DataType::Float as i32) {
        return Err(Error::Shape(format!(
            "graph input '{name}' has element type {:?}; only FLOAT inputs are supported",
            tensor.elem_type
        )));
    }
    let dims = tensor
        .shape
        .as_ref()
        .ok_or_else(|| Error::Shape(format!("graph input '{name}' has no shape")))?;
    Ok(dims
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(D::DimValue(v)) if *v > 0 => (Some(*v as usize), v.to_string()),
            Some(D::DimParam(p)) if !p.is_empty() => (None, format!("'{p}'")),
            _ => (None, "?".to_string()),
        })
        .collect())
}

/// The IR shape of graph input `vi` (its first dimension the batch, whatever the file says) and
/// the batch size the file fixes, if it does. `only` says whether it is the model's only input
/// (an unnamed [`InputShape`] and the data shape apply to it).
pub(crate) fn resolve(
    vi: &proto::ValueInfoProto,
    options: &LoadOptions,
    only: bool,
) -> Result<(Shape, Option<usize>)> {
    let name = vi.name.as_deref().unwrap_or("");
    let file = file_dims(vi)?;
    let given = options
        .input_shapes
        .iter()
        .find(|s| s.name.as_deref() == Some(name) || (s.name.is_none() && only));
    let mut dims: Vec<Option<usize>> = file.iter().map(|d| d.0).collect();
    if let Some(g) = given {
        if g.dims.len() != file.len() {
            return Err(Error::Shape(format!(
                "graph input '{name}' has {} dimensions, the shape given for it {:?} has {}",
                file.len(),
                g.dims,
                g.dims.len()
            )));
        }
        for (i, (slot, &v)) in dims.iter_mut().zip(&g.dims).enumerate() {
            match *slot {
                Some(f) if i > 0 && f != v => {
                    return Err(Error::Shape(format!(
                        "graph input '{name}' fixes dimension {i} to {f}, the shape given for it {:?} says {v}",
                        g.dims
                    )))
                }
                _ => *slot = Some(v),
            }
        }
    } else if let Some(data) = options
        .data_shape
        .as_ref()
        .filter(|d| only && d.len() == file.len())
    {
        for (slot, &v) in dims.iter_mut().zip(data) {
            slot.get_or_insert(v);
        }
    }
    let dynamic: Vec<String> = (1..file.len())
        .filter(|&i| dims[i].is_none())
        .map(|i| format!("{i} ({})", file[i].1))
        .collect();
    if !dynamic.is_empty() {
        let shown: Vec<&str> = file.iter().map(|d| d.1.as_str()).collect();
        return Err(Error::Shape(format!(
            "graph input '{name}' [{}] has dynamic dimension{} {}: give its shape with \
             --input-shape {name}:{} (LoadOptions::input_shapes in the library), or run it on data \
             of that shape",
            shown.join(", "),
            if dynamic.len() == 1 { "" } else { "s" },
            dynamic.join(", "),
            dims.iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Some(v) => v.to_string(),
                    None if i == 0 => "1".into(),
                    None => ["H", "W", "D"]
                        .get(i.saturating_sub(2))
                        .unwrap_or(&"S")
                        .to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        )));
    }
    let shape = Shape(
        dims.iter()
            .enumerate()
            .map(|(i, d)| {
                if i == 0 {
                    Dim::Batch
                } else {
                    Dim::Fixed(d.expect("checked"))
                }
            })
            .collect(),
    );
    shape
        .checked_per_batch_item()
        .map_err(|e| Error::Shape(format!("graph input '{name}': {e}")))?;
    Ok((shape, file.first().and_then(|d| d.0)))
}

/// Names given in `options` that are not inputs of the model, as an error.
pub(crate) fn check_names(options: &LoadOptions, inputs: &[&str]) -> Result<()> {
    for s in &options.input_shapes {
        match &s.name {
            Some(n) if !inputs.contains(&n.as_str()) => {
                return Err(Error::Shape(format!(
                    "a shape is given for input '{n}', but the model's inputs are: {}",
                    inputs.join(", ")
                )))
            }
            None if inputs.len() > 1 => {
                return Err(Error::Shape(format!(
                    "a shape without an input name is given, but the model has {} inputs ({}): write NAME:DIMS",
                    inputs.len(),
                    inputs.join(", ")
                )))
            }
            _ => {}
        }
    }
    Ok(())
}
