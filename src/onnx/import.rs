//! One ONNX node → one typed IR op: attributes parsed and defaulted per opset, constant parameter
//! inputs resolved ([`crate::onnx::load`] drives it node by node, after the node's old-opset form
//! is normalised and where it could not be folded into a constant).

use std::collections::HashMap;

mod compute;

use super::decode_tensor;
use super::fold::{Data, Int, Known};
use super::proto::{self, attribute_proto::AttributeType};
use crate::error::{Error, Result};
use crate::ir::{
    Binary, ConstData, Constant, Conv, Dim, Gemm, Graph, Op, PadMode, Padding, PoolKind, Shape,
    Unary, ValueId, Window,
};

/// What converting one node sees.
pub(super) struct Ctx<'a> {
    /// The node, in its normalised (newest-opset) form.
    pub node: &'a proto::NodeProto,
    /// The graph so far (the node's inputs are in it, shaped).
    pub graph: &'a Graph,
    /// The node's inputs.
    pub inputs: &'a [Option<ValueId>],
    /// The model's default-domain opset.
    pub opset: i64,
    /// Values folded at load, exactly (the batch in shape tensors).
    pub known: &'a HashMap<ValueId, Known>,
    /// The batch size the file fixes for its input, if it does.
    pub exported_batch: Option<usize>,
    /// An error about this node.
    pub err: &'a dyn Fn(String) -> Error,
}

impl Ctx<'_> {
    fn attr(&self, name: &str) -> Option<&proto::AttributeProto> {
        super::attribute(self.node, name)
    }

    fn attr_type(&self, a: &proto::AttributeProto, want: AttributeType) -> Result<()> {
        match a.r#type {
            Some(t) if t != want as i32 => Err((self.err)(format!(
                "attribute '{}' has type {:?}, expected {}",
                a.name.as_deref().unwrap_or(""),
                AttributeType::try_from(t)
                    .map(|t| t.as_str_name())
                    .unwrap_or("?"),
                want.as_str_name()
            ))),
            _ => Ok(()),
        }
    }

    fn int(&self, name: &str, default: i64) -> Result<i64> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) => {
                self.attr_type(a, AttributeType::Int)?;
                Ok(a.i.unwrap_or(default))
            }
        }
    }

    fn float(&self, name: &str, default: f32) -> Result<f32> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) => {
                self.attr_type(a, AttributeType::Float)?;
                Ok(a.f.unwrap_or(default))
            }
        }
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                self.attr_type(a, AttributeType::Ints)?;
                Ok(Some(a.ints.clone()))
            }
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                self.attr_type(a, AttributeType::String)?;
                Ok(Some(
                    String::from_utf8_lossy(a.s.as_deref().unwrap_or(&[])).into_owned(),
                ))
            }
        }
    }

    fn input_shape(&self, i: usize) -> Result<&Shape> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .map(|v| &self.graph.values[v].shape)
            .ok_or_else(|| (self.err)(format!("input {i} is missing")))
    }

    fn rank(&self) -> Result<usize> {
        Ok(self.input_shape(0)?.rank())
    }

    /// A constant input (initializer or `Constant` output), or `None` when omitted. A folded
    /// value that holds the batch is refused ([`Ctx::reshape_target`] reads those).
    fn const_input(&self, i: usize, what: &str) -> Result<Option<&Constant>> {
        match self.inputs.get(i).copied().flatten() {
            None => Ok(None),
            Some(v) => {
                if let Some(k) = self.known.get(&v) {
                    k.numbers(what).map_err(self.err)?;
                }
                self.graph.values[v].constant.as_ref().map(Some).ok_or_else(|| {
                (self.err)(format!(
                    "{what} (input {i}, '{}') must be a constant (an initializer or a Constant node)",
                    self.graph.values[v].name
                ))
            })
            }
        }
    }

    fn const_ints(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>> {
        match self.const_input(i, what)? {
            None => Ok(None),
            Some(c) => c
                .i64()
                .map(|v| Some(v.to_vec()))
                .ok_or_else(|| (self.err)(format!("{what} must be integers"))),
        }
    }

    fn const_scalar(&self, i: usize, what: &str) -> Result<Option<f32>> {
        match self.const_input(i, what)? {
            None => Ok(None),
            Some(c) => match (c.f32(), c.len()) {
                (Some(v), 1) => Ok(Some(v[0])),
                _ => Err((self.err)(format!(
                    "{what} must be one float, got shape {:?}",
                    c.dims
                ))),
            },
        }
    }

    /// Reshape's target (input 1). A folded shape's batch becomes 0 ("copy") where the input's
    /// axis is the batch, else −1 (inferred) when no entry is −1. A leading size equal to the
    /// batch the file fixes (an export at batch 1: `[1, -1]`) is read as the batch, where the
    /// target as written would not hold every batch size.
    fn reshape_target(&self, allow_zero: bool) -> Result<Vec<i64>> {
        let err = self.err;
        let v = self.inputs.get(1).copied().flatten();
        let v = v.ok_or_else(|| err("the shape input is missing".into()))?;
        let x = self.input_shape(0)?;
        let mut target = match self.known.get(&v).map(|k| &k.data) {
            Some(Data::Int(items)) if items.contains(&Int::Batch) => {
                let inferred = items.contains(&Int::Num(-1));
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(match item {
                        Int::Num(n) => *n,
                        Int::Batch if !allow_zero && x.0.get(i) == Some(&Dim::Batch) => 0,
                        Int::Batch if !inferred => -1,
                        Int::Batch => {
                            return Err(err(format!(
                                "the target shape {items:?} puts the batch at axis {i}, which \
                                 is not the input's batch axis, beside a −1"
                            )))
                        }
                    });
                }
                out
            }
            _ => self.const_ints(1, "shape")?.expect("present"),
        };
        let literal = Op::Reshape {
            shape: target.clone(),
            allow_zero,
        };
        let fits = crate::ir::shape::infer(&literal, &[Some(x.clone())]).is_ok();
        let batch = self.exported_batch.map(|b| b as i64);
        if !fits
            && !allow_zero
            && x.0.first() == Some(&Dim::Batch)
            && target.first() == batch.as_ref()
        {
            target[0] = 0;
        }
        Ok(target)
    }

    /// Unsqueeze or Squeeze of data as a Reshape target: fixed sizes, the batch as 0 where it
    /// stays at axis 0 (else −1), and `[0, -1]` for a result of two axes (a flatten).
    fn squeeze_target(&self, unsqueeze: bool) -> Result<Vec<i64>> {
        let x = self.input_shape(0)?;
        let given = self.const_ints(1, "axes")?;
        let rank = if unsqueeze {
            x.rank() + given.as_ref().map_or(0, |a| a.len())
        } else {
            x.rank()
        };
        let mut axes = match &given {
            Some(a) => a
                .iter()
                .map(|&v| self.axis(v, rank))
                .collect::<Result<Vec<_>>>()?,
            None if unsqueeze => return Err((self.err)("the axes are missing".into())),
            None => (0..rank).filter(|&i| x.0[i] == Dim::Fixed(1)).collect(),
        };
        axes.sort_unstable();
        axes.dedup();
        let out: Vec<Dim> = if unsqueeze {
            let mut rest = x.0.iter();
            (0..rank)
                .map(|i| {
                    if axes.contains(&i) {
                        Dim::Fixed(1)
                    } else {
                        *rest.next().expect("rank")
                    }
                })
                .collect()
        } else {
            if let Some(&a) = axes.iter().find(|&&a| x.0[a] != Dim::Fixed(1)) {
                return Err((self.err)(format!("axis {a} of {x} is not 1")));
            }
            (0..rank)
                .filter(|i| !axes.contains(i))
                .map(|i| x.0[i])
                .collect()
        };
        if out.len() == 2 && out[0] == Dim::Batch {
            return Ok(vec![0, -1]);
        }
        Ok(out
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dim::Fixed(v) => *v as i64,
                Dim::Batch if i == 0 => 0,
                Dim::Batch => -1,
            })
            .collect())
    }

    fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        let a = if axis < 0 { axis + rank as i64 } else { axis };
        if a < 0 || a as usize >= rank {
            return Err((self.err)(format!(
                "axis {axis} is out of range for rank {rank}"
            )));
        }
        Ok(a as usize)
    }

    fn pair(&self, name: &str, default: usize) -> Result<[usize; 2]> {
        match self.ints(name)? {
            None => Ok([default; 2]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 0) => {
                Ok([v[0] as usize, v[1] as usize])
            }
            Some(v) => Err((self.err)(format!(
                "{name} {v:?}: only 2-D windows with non-negative values are supported"
            ))),
        }
    }

    fn window(&self, kernel: [usize; 2], pooling: bool) -> Result<Window> {
        let auto_pad = self.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
        let padding = match auto_pad.as_str() {
            "NOTSET" => match self.ints("pads")? {
                None => Padding::Explicit([0; 4]),
                Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => {
                    Padding::Explicit([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
                }
                Some(p) => {
                    return Err((self.err)(format!(
                        "pads {p:?}: expected 4 non-negative values (2-D)"
                    )))
                }
            },
            "VALID" => Padding::Explicit([0; 4]),
            "SAME_UPPER" => Padding::SameUpper,
            "SAME_LOWER" => Padding::SameLower,
            other => return Err((self.err)(format!("auto_pad '{other}' is not valid"))),
        };
        Ok(Window {
            kernel,
            strides: self.pair("strides", 1)?,
            dilations: self.pair("dilations", 1)?,
            padding,
            ceil_mode: pooling && self.int("ceil_mode", 0)? != 0,
        })
    }
}

/// The typed op of a proto node (and, for `Constant`, its value).
pub(super) fn convert(ctx: &Ctx<'_>) -> Result<(Op, Option<Constant>)> {
    let op_type = ctx.node.op_type.as_deref().unwrap_or("");
    let err = ctx.err;
    let op = match op_type {
        "Conv" => {
            let w = ctx.input_shape(1)?;
            let kernel = match ctx.ints("kernel_shape")? {
                Some(k) if k.len() == 2 && k.iter().all(|&x| x > 0) => {
                    [k[0] as usize, k[1] as usize]
                }
                Some(k) => {
                    return Err(err(format!(
                        "kernel_shape {k:?}: only 2-D convolutions are supported"
                    )))
                }
                None => match w.as_fixed() {
                    Some(d) if d.len() == 4 => [d[2], d[3]],
                    _ => return Err(err(format!("weight {w} is not a 2-D kernel"))),
                },
            };
            let group = ctx.int("group", 1)?;
            if group < 1 {
                return Err(err(format!("group {group} must be ≥ 1")));
            }
            Op::Conv(Conv {
                window: ctx.window(kernel, false)?,
                group: group as usize,
            })
        }
        "Gemm" => Op::Gemm(Gemm {
            alpha: ctx.float("alpha", 1.0)?,
            beta: ctx.float("beta", 1.0)?,
            trans_a: ctx.int("transA", 0)? != 0,
            trans_b: ctx.int("transB", 0)? != 0,
        }),
        "MatMul" => Op::MatMul,
        "BatchNormalization" => {
            if ctx.int("training_mode", 0)? != 0 {
                return Err(err("training_mode = 1 is not supported".into()));
            }
            Op::BatchNorm {
                epsilon: ctx.float("epsilon", 1e-5)?,
            }
        }
        "Relu" => Op::Unary(Unary::Relu),
        "LeakyRelu" => Op::Unary(Unary::LeakyRelu {
            alpha: ctx.float("alpha", 0.01)?,
        }),
        "Sigmoid" => Op::Unary(Unary::Sigmoid),
        "HardSigmoid" => Op::Unary(Unary::HardSigmoid {
            alpha: ctx.float("alpha", 0.2)?,
            beta: ctx.float("beta", 0.5)?,
        }),
        "HardSwish" => Op::Unary(Unary::HardSwish),
        "Clip" => {
            // Opset ≥ 11 gives the bounds as optional inputs (initializers or Constants); older
            // files (and some exporters) as attributes. Inputs win where both are present.
            let min = ctx.float("min", f32::NEG_INFINITY)?;
            let max = ctx.float("max", f32::INFINITY)?;
            Op::Unary(Unary::Clip {
                min: ctx.const_scalar(1, "min")?.unwrap_or(min),
                max: ctx.const_scalar(2, "max")?.unwrap_or(max),
            })
        }
        "Add" => Op::Binary(Binary::Add),
        "Sub" => Op::Binary(Binary::Sub),
        "Mul" => Op::Binary(Binary::Mul),
        "Div" => Op::Binary(Binary::Div),
        "MaxPool" | "AveragePool" => {
            let kernel = match ctx.ints("kernel_shape")? {
                Some(k) if k.len() == 2 && k.iter().all(|&x| x > 0) => {
                    [k[0] as usize, k[1] as usize]
                }
                other => {
                    return Err(err(format!(
                        "kernel_shape {other:?}: a 2-D kernel is required"
                    )))
                }
            };
            let kind = if op_type == "MaxPool" {
                PoolKind::Max
            } else {
                PoolKind::Average {
                    count_include_pad: ctx.int("count_include_pad", 0)? != 0,
                }
            };
            Op::Pool {
                kind,
                window: ctx.window(kernel, true)?,
            }
        }
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "Flatten" => {
            let rank = ctx.rank()?;
            let axis = ctx.int("axis", 1)?;
            let a = if axis < 0 { axis + rank as i64 } else { axis };
            if a < 0 || a as usize > rank {
                return Err(err(format!("axis {axis} is out of range for rank {rank}")));
            }
            Op::Flatten { axis: a as usize }
        }
        "Reshape" => {
            let allow_zero = ctx.int("allowzero", 0)? != 0;
            Op::Reshape {
                shape: ctx.reshape_target(allow_zero)?,
                allow_zero,
            }
        }
        "Unsqueeze" | "Squeeze" => Op::Reshape {
            shape: ctx.squeeze_target(op_type == "Unsqueeze")?,
            allow_zero: false,
        },
        "Gather" => {
            let x = ctx.input_shape(0)?;
            let axis = ctx.axis(ctx.int("axis", 0)?, x.rank())?;
            let Dim::Fixed(len) = x.0[axis] else {
                return Err(err("a Gather along the batch axis is not supported".into()));
            };
            let c = ctx
                .const_input(1, "the indices")?
                .ok_or_else(|| err("the indices are missing".into()))?;
            let given = c
                .i64()
                .ok_or_else(|| err("the indices must be integers".into()))?;
            let indices = given
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + len as i64 } else { i };
                    usize::try_from(j).ok().filter(|&j| j < len).ok_or_else(|| {
                        err(format!("index {i} is out of range for axis {axis} of {x}"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Op::Gather {
                axis,
                indices,
                index_dims: c.dims.clone(),
            }
        }
        "Expand" => {
            let v = ctx.inputs.get(1).copied().flatten();
            let v = v.ok_or_else(|| err("the shape input is missing".into()))?;
            let shape = match ctx.known.get(&v).map(|k| &k.data) {
                Some(Data::Int(items)) => items
                    .iter()
                    .map(|d| match d {
                        Int::Num(n) => usize::try_from(*n).ok().map(Dim::Fixed),
                        Int::Batch => Some(Dim::Batch),
                    })
                    .collect::<Option<Vec<_>>>(),
                _ => ctx
                    .const_ints(1, "shape")?
                    .expect("present")
                    .iter()
                    .map(|&n| usize::try_from(n).ok().map(Dim::Fixed))
                    .collect(),
            }
            .ok_or_else(|| err("the target shape has a negative size".into()))?;
            Op::Expand { shape }
        }
        "Cast" => match ctx.int("to", 0)? {
            1 => Op::Identity,
            to => {
                return Err(err(format!(
                    "a Cast of data to element type {to} is not supported (only to FLOAT; casts \
                     of values known at load are folded)"
                )))
            }
        },
        "Concat" => {
            let axis = ctx.int("axis", i64::MIN)?;
            if axis == i64::MIN {
                return Err(err("attribute 'axis' is required".into()));
            }
            Op::Concat {
                axis: ctx.axis(axis, ctx.rank()?)?,
            }
        }
        "Slice" => {
            let rank = ctx.rank()?;
            let starts = ctx
                .const_ints(1, "starts")?
                .ok_or_else(|| err("starts is missing".into()))?;
            let ends = ctx
                .const_ints(2, "ends")?
                .ok_or_else(|| err("ends is missing".into()))?;
            let axes = match ctx.const_ints(3, "axes")? {
                Some(a) => a
                    .iter()
                    .map(|&x| ctx.axis(x, rank))
                    .collect::<Result<Vec<_>>>()?,
                None => (0..starts.len()).collect(),
            };
            let steps = ctx
                .const_ints(4, "steps")?
                .unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err(err(format!(
                    "starts {starts:?}, ends {ends:?}, axes {axes:?}, steps {steps:?} must have equal lengths"
                )));
            }
            if steps.contains(&0) {
                return Err(err("a step is 0".into()));
            }
            let mut sorted = axes.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != axes.len() {
                return Err(err(format!("axes {axes:?} repeat an axis")));
            }
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            }
        }
        "Pad" => {
            let rank = ctx.rank()?;
            let mode = match ctx.string("mode")?.as_deref().unwrap_or("constant") {
                "constant" => PadMode::Constant,
                "reflect" => PadMode::Reflect,
                "edge" => PadMode::Edge,
                other => return Err(err(format!("pad mode '{other}' is not supported"))),
            };
            let given = ctx
                .const_ints(1, "pads")?
                .ok_or_else(|| err("pads is missing".into()))?;
            let value = ctx.const_scalar(2, "constant_value")?.unwrap_or(0.0);
            let pads = match ctx.const_ints(3, "axes")? {
                None => given,
                Some(axes) => {
                    if given.len() != 2 * axes.len() {
                        return Err(err(format!(
                            "pads {given:?} needs two values per axis of {axes:?}"
                        )));
                    }
                    let mut full = vec![0i64; 2 * rank];
                    for (k, &a) in axes.iter().enumerate() {
                        let a = ctx.axis(a, rank)?;
                        full[a] = given[k];
                        full[a + rank] = given[k + axes.len()];
                    }
                    full
                }
            };
            Op::Pad { mode, pads, value }
        }
        "Dropout" | "Identity" => Op::Identity,
        "Softmax" => {
            let rank = ctx.rank()?;
            let coerce_2d = ctx.opset < 13;
            let axis = ctx.int("axis", if coerce_2d { 1 } else { -1 })?;
            Op::Softmax {
                axis: ctx.axis(axis, rank)?,
                coerce_2d,
            }
        }
        "Constant" => {
            let c = constant_value(ctx)?;
            return Ok((Op::Constant, Some(c)));
        }
        other
            if super::fold::EVALUATORS.iter().any(|(op, _)| *op == other)
                && !super::supported::SUPPORTED_OPS.contains(&other) =>
        {
            return Err(err(format!(
                "'{other}' is supported only where its inputs are known at load (constants, \
                 shapes) so that it folds into a constant; here an input is computed from the data"
            )))
        }
        other => compute::convert(ctx, other)?.ok_or_else(|| {
            err(format!(
                "op '{other}' is not supported\nsupported ops: {} (docs/OPS.md)",
                super::supported::SUPPORTED_OPS.join(", ")
            ))
        })?,
    };
    Ok((op, None))
}

fn constant_value(ctx: &Ctx<'_>) -> Result<Constant> {
    let err = ctx.err;
    let a = ctx
        .node
        .attribute
        .first()
        .ok_or_else(|| err("a Constant needs a value attribute".into()))?;
    let name = a.name.as_deref().unwrap_or("");
    Ok(match name {
        "value" => decode_tensor(
            a.t.as_ref()
                .ok_or_else(|| err("attribute 'value' holds no tensor".into()))?,
        )
        .map_err(err)?,
        "value_float" => Constant {
            dims: vec![],
            data: ConstData::F32(vec![a.f.unwrap_or(0.0)]),
        },
        "value_floats" => Constant {
            dims: vec![a.floats.len()],
            data: ConstData::F32(a.floats.clone()),
        },
        "value_int" => Constant {
            dims: vec![],
            data: ConstData::I64(vec![a.i.unwrap_or(0)]),
        },
        "value_ints" => Constant {
            dims: vec![a.ints.len()],
            data: ConstData::I64(a.ints.clone()),
        },
        other => {
            return Err(err(format!(
                "Constant attribute '{other}' is not supported (value, value_float(s), value_int(s) are)"
            )))
        }
    })
}
