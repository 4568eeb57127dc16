//! ONNX → IR for the compute ops beyond the basic CNN set: Split, Transpose, Resize, Sum/Max/Min,
//! ConvTranspose, the spatial reductions, GlobalMaxPool, LRN and the element-wise functions
//! (Tanh, Exp, Softplus, Sqrt, Erf, Pow with a constant exponent). Attribute defaults and opset
//! differences are settled here; a refused form is an error naming the node.

use super::Ctx;
use crate::error::Result;
use crate::ir::{
    ConvTranspose, CoordMode, Lrn, Nary, NearestRounding, Op, Padding, ReduceKind, Resize,
    ResizeMode, Unary, Window,
};

/// The typed op of a proto node of one of these types, or `None` for another type.
pub(super) fn convert(ctx: &Ctx<'_>, op_type: &str) -> Result<Option<Op>> {
    let err = ctx.err;
    Ok(Some(match op_type {
        "Tanh" => Op::Unary(Unary::Tanh),
        "Exp" => Op::Unary(Unary::Exp),
        "Softplus" => Op::Unary(Unary::Softplus),
        "Sqrt" => Op::Unary(Unary::Sqrt),
        "Erf" => Op::Unary(Unary::Erf),
        "Pow" => {
            let c = ctx
                .const_input(1, "the exponent")?
                .ok_or_else(|| err("the exponent is missing".into()))?;
            let exponent = match (c.f32(), c.i64()) {
                (Some([e]), _) => *e,
                (_, Some([e])) => *e as f32,
                _ => {
                    return Err(err(format!(
                        "the exponent must be one constant value, got shape {:?}",
                        c.dims
                    )))
                }
            };
            Op::Unary(Unary::Pow { exponent })
        }
        "Sum" => Op::Nary(Nary::Sum),
        "Max" => Op::Nary(Nary::Max),
        "Min" => Op::Nary(Nary::Min),
        "GlobalMaxPool" => Op::GlobalMaxPool,
        "LRN" => {
            let size = ctx.int("size", 0)?;
            if size < 1 {
                return Err(err(format!("size {size} must be ≥ 1")));
            }
            Op::Lrn(Lrn {
                size: size as usize,
                alpha: ctx.float("alpha", 1e-4)?,
                beta: ctx.float("beta", 0.75)?,
                bias: ctx.float("bias", 1.0)?,
            })
        }
        "Transpose" => {
            let rank = ctx.rank()?;
            let perm = match ctx.ints("perm")? {
                Some(p) => p
                    .iter()
                    .map(|&a| {
                        usize::try_from(a).map_err(|_| err(format!("perm {p:?} is negative")))
                    })
                    .collect::<Result<Vec<_>>>()?,
                None => (0..rank).rev().collect(),
            };
            Op::Transpose { perm }
        }
        "Split" => split(ctx)?,
        "Resize" => resize(ctx)?,
        "ConvTranspose" => conv_transpose(ctx)?,
        "ReduceMean" => reduce(ctx, ReduceKind::Mean)?,
        "ReduceMax" => reduce(ctx, ReduceKind::Max)?,
        "ReduceSum" => reduce(ctx, ReduceKind::Sum)?,
        _ => return Ok(None),
    }))
}

fn split(ctx: &Ctx<'_>) -> Result<Op> {
    let err = ctx.err;
    let x = ctx.input_shape(0)?;
    let axis = ctx.axis(ctx.int("axis", 0)?, x.rank())?;
    let len = match x.0[axis] {
        crate::ir::Dim::Fixed(d) => d,
        crate::ir::Dim::Batch => {
            return Err(err("splitting the batch axis is not supported".into()))
        }
    };
    let outputs = ctx.node.output.len();
    // Opset ≥ 13: sizes as input 1; older files: the `split` attribute; neither: equal parts
    // (opset 18's `num_outputs`: ⌈len / n⌉ each, the last one smaller).
    let given = match ctx.const_ints(1, "split")? {
        Some(s) => Some(s),
        None => ctx.ints("split")?,
    };
    let sizes: Vec<usize> = match given {
        Some(s) => s
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| err(format!("split {s:?} is negative"))))
            .collect::<Result<_>>()?,
        None => {
            let n = ctx.int("num_outputs", outputs as i64)?;
            if n != outputs as i64 {
                return Err(err(format!("num_outputs {n} for {outputs} outputs")));
            }
            let n = outputs;
            let part = len.div_ceil(n);
            if ctx.attr("num_outputs").is_none() && len % n != 0 {
                return Err(err(format!(
                    "axis {axis} of length {len} does not split into {n} equal parts"
                )));
            }
            (0..n)
                .map(|i| part.min(len - (i * part).min(len)))
                .collect()
        }
    };
    if sizes.len() != outputs {
        return Err(err(format!("{} parts for {outputs} outputs", sizes.len())));
    }
    Ok(Op::Split { axis, sizes })
}

fn resize(ctx: &Ctx<'_>) -> Result<Op> {
    let err = ctx.err;
    let rank = ctx.rank()?;
    if rank != 4 {
        return Err(err(format!(
            "only NCHW (rank 4) input is supported, got rank {rank}"
        )));
    }
    if ctx.attr("axes").is_some() || ctx.int("antialias", 0)? != 0 {
        return Err(err(
            "the axes and antialias attributes are not supported".into()
        ));
    }
    let mode = match ctx.string("mode")?.as_deref().unwrap_or("nearest") {
        "nearest" => ResizeMode::Nearest(
            match ctx
                .string("nearest_mode")?
                .as_deref()
                .unwrap_or("round_prefer_floor")
            {
                "round_prefer_floor" => NearestRounding::RoundPreferFloor,
                "round_prefer_ceil" => NearestRounding::RoundPreferCeil,
                "floor" => NearestRounding::Floor,
                "ceil" => NearestRounding::Ceil,
                other => return Err(err(format!("nearest_mode '{other}' is not valid"))),
            },
        ),
        "linear" | "bilinear" => ResizeMode::Linear,
        other => {
            return Err(err(format!(
                "mode '{other}' is not supported (nearest and linear are)"
            )))
        }
    };
    let coord = match ctx
        .string("coordinate_transformation_mode")?
        .as_deref()
        .unwrap_or("half_pixel")
    {
        "half_pixel" => CoordMode::HalfPixel,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        "align_corners" => CoordMode::AlignCorners,
        "asymmetric" => CoordMode::Asymmetric,
        other => {
            return Err(err(format!(
                "coordinate_transformation_mode '{other}' is not supported"
            )))
        }
    };
    // X, roi, scales, sizes (one of the last two): Upsample and Resize-10 (X, scales) arrive in
    // this form too, with their coordinate and rounding modes written out (`super::opset`).
    let scales = match ctx.const_input(2, "scales")? {
        Some(c) if !c.is_empty() => Some(
            c.f32()
                .ok_or_else(|| err("scales must be floats".into()))?
                .to_vec(),
        ),
        _ => None,
    };
    let sizes = ctx.const_ints(3, "sizes")?.filter(|s| !s.is_empty());
    let x = ctx.input_shape(0)?;
    let resize = match (scales, sizes) {
        (Some(s), None) if s.len() == 4 && s[0] == 1.0 && s[1] == 1.0 => Resize {
            mode,
            coord,
            scales: [s[2], s[3]],
            sizes: None,
        },
        (None, Some(s))
            if s.len() == 4
                && s[2..].iter().all(|&v| v > 0)
                && x.0[1] == crate::ir::Dim::Fixed(s[1] as usize) =>
        {
            Resize {
                mode,
                coord,
                scales: [1.0; 2],
                sizes: Some([s[2] as usize, s[3] as usize]),
            }
        }
        (scales, sizes) => {
            return Err(err(format!(
                "scales {scales:?} / sizes {sizes:?}: exactly one is needed, resizing only the \
                 two spatial axes of {x}"
            )))
        }
    };
    Ok(Op::Resize(resize))
}

fn conv_transpose(ctx: &Ctx<'_>) -> Result<Op> {
    let err = ctx.err;
    let w = ctx.input_shape(1)?;
    let kernel = match (ctx.ints("kernel_shape")?, w.as_fixed()) {
        (Some(k), _) if k.len() == 2 && k.iter().all(|&v| v > 0) => [k[0] as usize, k[1] as usize],
        (None, Some(d)) if d.len() == 4 => [d[2], d[3]],
        _ => return Err(err(format!("weight {w}: only 2-D kernels are supported"))),
    };
    let auto_pad = ctx.string("auto_pad")?;
    if !matches!(auto_pad.as_deref(), None | Some("NOTSET") | Some("VALID"))
        || ctx.attr("output_shape").is_some()
    {
        return Err(err(
            "auto_pad SAME_* and output_shape are not supported; give explicit pads".into(),
        ));
    }
    let pads = match ctx.ints("pads")? {
        None => [0; 4],
        Some(p) if p.len() == 4 && p.iter().all(|&v| v >= 0) => {
            [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
        }
        Some(p) => return Err(err(format!("pads {p:?}: expected 4 non-negative values"))),
    };
    let group = ctx.int("group", 1)?;
    if group < 1 {
        return Err(err(format!("group {group} must be ≥ 1")));
    }
    let window = Window {
        kernel,
        strides: ctx.pair("strides", 1)?,
        dilations: ctx.pair("dilations", 1)?,
        padding: Padding::Explicit(pads),
        ceil_mode: false,
    };
    if window.strides.contains(&0) || window.dilations.contains(&0) {
        return Err(err(format!(
            "strides {:?} and dilations {:?} must be ≥ 1",
            window.strides, window.dilations
        )));
    }
    let ct = ConvTranspose {
        window,
        output_padding: ctx.pair("output_padding", 0)?,
        group: group as usize,
    };
    Ok(Op::ConvTranspose(ct))
}

fn reduce(ctx: &Ctx<'_>, kind: ReduceKind) -> Result<Op> {
    let err = ctx.err;
    let rank = ctx.rank()?;
    // Axes: an input from opset 13 (ReduceSum) and 18 (the others), an attribute before.
    let given = match ctx.const_ints(1, "axes")? {
        Some(a) => Some(a),
        None => ctx.ints("axes")?,
    };
    let mut axes = match given.filter(|a| !a.is_empty()) {
        Some(a) => a
            .iter()
            .map(|&v| ctx.axis(v, rank))
            .collect::<Result<Vec<_>>>()?,
        None if ctx.int("noop_with_empty_axes", 0)? != 0 => {
            return Err(err(
                "noop_with_empty_axes with no axes is not supported".into()
            ))
        }
        None => (0..rank).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    Ok(Op::Reduce {
        kind,
        axes,
        keepdims: ctx.int("keepdims", 1)? != 0,
    })
}
