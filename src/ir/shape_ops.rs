//! Shape inference of the layout, resampling and reduction ops (Split, Transpose, Resize, the
//! n-ary element-wise ops, ConvTranspose, the reductions, GlobalMaxPool, LRN); [`super::shape`]
//! hands them here.

use super::op::Op;
use super::shape::{broadcast, input_shape, Dim, Shape};

/// A fixed dimension of `shape`, or a message saying which.
fn fixed(shape: &Shape, axis: usize, what: &str) -> Result<usize, String> {
    match shape.0.get(axis) {
        Some(Dim::Fixed(v)) => Ok(*v),
        Some(Dim::Batch) => Err(format!("{what} (axis {axis} of {shape}) must be fixed")),
        None => Err(format!("{what}: {shape} has no axis {axis}")),
    }
}

fn nchw(x: &Shape, op: &str) -> Result<[usize; 3], String> {
    if x.rank() != 4 {
        return Err(format!("only 2-D {op} is supported: input {x}"));
    }
    Ok([
        fixed(x, 1, "channels")?,
        fixed(x, 2, "input height")?,
        fixed(x, 3, "input width")?,
    ])
}

/// The shapes of every output of `op` (one per Split part, else one); `x` is input 0.
pub(super) fn infer(op: &Op, inputs: &[Option<Shape>]) -> Result<Vec<Shape>, String> {
    let input = |i: usize| input_shape(inputs, i);
    let x = input(0)?;
    let one = |s: Shape| Ok(vec![s]);
    match op {
        Op::Split { axis, sizes } => {
            let d = fixed(x, *axis, "split axis")?;
            if sizes.iter().sum::<usize>() != d {
                return Err(format!(
                    "split sizes {sizes:?} do not add up to axis {axis} of {x}"
                ));
            }
            Ok(sizes
                .iter()
                .map(|&s| {
                    let mut out = x.clone();
                    out.0[*axis] = Dim::Fixed(s);
                    out
                })
                .collect())
        }
        Op::Transpose { perm } => {
            let mut seen = vec![false; x.rank()];
            for &p in perm {
                if p >= x.rank() || std::mem::replace(&mut seen[p], true) {
                    return Err(format!(
                        "perm {perm:?} is not a permutation of the axes of {x}"
                    ));
                }
            }
            if perm.len() != x.rank() {
                return Err(format!("perm {perm:?} does not match the rank of {x}"));
            }
            one(Shape(perm.iter().map(|&p| x.0[p]).collect()))
        }
        Op::Resize(r) => {
            let [_, h, w] = nchw(x, "Resize")?;
            let (out, _) = r.resolve([h, w])?;
            one(Shape(vec![
                x.0[0],
                x.0[1],
                Dim::Fixed(out[0]),
                Dim::Fixed(out[1]),
            ]))
        }
        Op::Nary(_) => {
            let mut out = x.clone();
            for i in 1..inputs.len() {
                out = broadcast(&out, input(i)?)?;
            }
            one(out)
        }
        Op::ConvTranspose(ct) => {
            let [c, h, w] = nchw(x, "ConvTranspose")?;
            let wt = input(1)?;
            let dims = wt
                .as_fixed()
                .filter(|d| d.len() == 4)
                .ok_or_else(|| format!("weight {wt} must be a fixed (C, M/group, kh, kw)"))?;
            let g = ct.group;
            if dims[0] != c || g == 0 || c % g != 0 || [dims[2], dims[3]] != ct.window.kernel {
                return Err(format!(
                    "weight {wt} does not fit input {x} with group {g} and kernel {:?}",
                    ct.window.kernel
                ));
            }
            let m = dims[1] * g;
            if let Some(b) = inputs.get(2).and_then(|s| s.as_ref()) {
                if b.as_fixed() != Some(vec![m]) {
                    return Err(format!("bias {b} must be [{m}]"));
                }
            }
            let [oh, ow] = ct.output(h, w)?;
            one(Shape(vec![
                x.0[0],
                Dim::Fixed(m),
                Dim::Fixed(oh),
                Dim::Fixed(ow),
            ]))
        }
        Op::Reduce { axes, keepdims, .. } => {
            let consecutive = axes.windows(2).all(|p| p[1] == p[0] + 1);
            if axes.is_empty()
                || !consecutive
                || axes.contains(&0)
                || axes[axes.len() - 1] >= x.rank()
            {
                return Err(format!(
                    "axes {axes:?} of {x}: only consecutive axes after the batch are supported"
                ));
            }
            let mut out = Vec::new();
            for (a, d) in x.0.iter().enumerate() {
                if !axes.contains(&a) {
                    out.push(*d);
                } else if *keepdims {
                    out.push(Dim::Fixed(1));
                }
            }
            one(Shape(out))
        }
        Op::GlobalMaxPool => {
            if x.rank() < 3 {
                return Err(format!("input {x} has no spatial axes"));
            }
            let mut out = x.clone();
            out.0[2..].iter_mut().for_each(|d| *d = Dim::Fixed(1));
            one(out)
        }
        Op::Lrn(lrn) => {
            if x.rank() < 2 || lrn.size == 0 {
                return Err(format!(
                    "LRN of size {} needs channels: input {x}",
                    lrn.size
                ));
            }
            fixed(x, 1, "channels")?;
            one(x.clone())
        }
        other => Err(format!("{} is not shaped here", other.kind())),
    }
}
