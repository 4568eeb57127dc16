//! Shapes with a symbolic batch, and shape inference per op. The same rules give the symbolic
//! shapes of the IR (for checks, `info`, FLOPs) and the concrete shapes of a run (batch known).

use super::op::{Op, PoolKind};

/// One dimension: the batch (symbolic, `N`) or a fixed size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// The batch size `N`, unknown until a run.
    Batch,
    /// A fixed size.
    Fixed(usize),
}

impl Dim {
    /// The size for a batch of `n` images.
    pub fn at(self, n: usize) -> usize {
        match self {
            Dim::Batch => n,
            Dim::Fixed(d) => d,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Batch => write!(f, "N"),
            Dim::Fixed(d) => write!(f, "{d}"),
        }
    }
}

/// A tensor shape, outermost dimension first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A shape of fixed sizes.
    pub fn fixed(dims: &[usize]) -> Self {
        Shape(dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The concrete shape for a batch of `n`.
    pub fn at(&self, n: usize) -> Vec<usize> {
        self.0.iter().map(|d| d.at(n)).collect()
    }

    /// The fixed sizes, or `None` when a dimension is the batch.
    pub fn as_fixed(&self) -> Option<Vec<usize>> {
        self.0
            .iter()
            .map(|d| match d {
                Dim::Fixed(v) => Some(*v),
                Dim::Batch => None,
            })
            .collect()
    }

    /// Values per image: the product of the fixed dimensions (the batch counts once). Saturates
    /// rather than wraps; shapes of a loaded graph are within [`MAX_ELEMENTS`]
    /// ([`Shape::checked_per_batch_item`]).
    pub fn per_batch_item(&self) -> usize {
        self.fixed_dims().fold(1usize, |a, d| a.saturating_mul(d))
    }

    /// Values per image, or a message naming the shape when their f32 bytes would not fit in
    /// memory's address range (more than [`MAX_ELEMENTS`]).
    pub fn checked_per_batch_item(&self) -> Result<usize, String> {
        self.fixed_dims()
            .try_fold(1usize, |a, d| a.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| {
                format!(
                    "shape {self} holds more than {MAX_ELEMENTS} values per image (its float32 bytes exceed the address space)"
                )
            })
    }

    fn fixed_dims(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().map(|d| match d {
            Dim::Fixed(v) => *v,
            Dim::Batch => 1,
        })
    }
}

/// The most values a tensor may hold: its float32 bytes must fit in `isize` (the most any
/// allocation may take).
pub const MAX_ELEMENTS: usize = isize::MAX as usize / 4;

/// `a + b` or a message naming both.
fn add(a: usize, b: usize, what: &str) -> Result<usize, String> {
    a.checked_add(b)
        .ok_or_else(|| format!("{what}: {a} + {b} overflows"))
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// The NumPy broadcast of two shapes, or a message.
pub fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let mut out = vec![Dim::Fixed(1); rank];
    for (i, slot) in out.iter_mut().enumerate() {
        let da = (i + a.rank()).checked_sub(rank).map(|j| a.0[j]);
        let db = (i + b.rank()).checked_sub(rank).map(|j| b.0[j]);
        *slot = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x,
            (Some(x), Some(y)) if x == y => x,
            (Some(Dim::Fixed(1)), Some(y)) => y,
            (Some(x), Some(Dim::Fixed(1))) => x,
            _ => return Err(format!("shapes {a} and {b} do not broadcast")),
        };
    }
    Ok(Shape(out))
}

fn fixed_dim(shape: &Shape, axis: usize, what: &str) -> Result<usize, String> {
    match shape.0.get(axis) {
        Some(Dim::Fixed(v)) => Ok(*v),
        Some(Dim::Batch) => Err(format!(
            "{what} (axis {axis} of {shape}) is the batch; it must be fixed"
        )),
        None => Err(format!("{what}: {shape} has no axis {axis}")),
    }
}

/// Product of dimensions as a [`Dim`]: fixed when all are, the batch when exactly one is the batch
/// and the others multiply to 1; anything else (e.g. `2N`) is not representable.
fn product(dims: &[Dim]) -> Result<Dim, String> {
    let batch = dims.iter().filter(|d| **d == Dim::Batch).count();
    let fixed = Shape(dims.to_vec()).checked_per_batch_item()?;
    match (batch, fixed) {
        (0, f) => Ok(Dim::Fixed(f)),
        (1, 1) => Ok(Dim::Batch),
        _ => Err(format!(
            "merging dimensions {} would mix the batch with other axes",
            Shape(dims.to_vec())
        )),
    }
}

/// Output shapes of `op` for inputs of shapes `inputs` (`None` for an absent optional input).
/// `params` are the shapes of the parameter inputs as given (weights); errors are messages that
/// the caller wraps with the node's name.
/// For an op with several outputs (Split), the first.
pub fn infer(op: &Op, inputs: &[Option<Shape>]) -> Result<Shape, String> {
    Ok(infer_all(op, inputs)?.swap_remove(0))
}

/// The shapes of every output of `op` (one per part of a Split, else one).
pub fn infer_all(op: &Op, inputs: &[Option<Shape>]) -> Result<Vec<Shape>, String> {
    let outs = match op {
        Op::Split { .. }
        | Op::Transpose { .. }
        | Op::Resize(_)
        | Op::Nary(_)
        | Op::ConvTranspose(_)
        | Op::Reduce { .. }
        | Op::GlobalMaxPool
        | Op::Lrn(_) => super::shape_ops::infer(op, inputs)?,
        _ => vec![infer_unchecked(op, inputs)?],
    };
    if outs.is_empty() {
        return Err("it has no output".into());
    }
    for out in &outs {
        out.checked_per_batch_item()
            .map_err(|e| format!("the output {e}"))?;
    }
    Ok(outs)
}

/// The shape of input `i`, or a message when it is absent.
pub(super) fn input_shape(inputs: &[Option<Shape>], i: usize) -> Result<&Shape, String> {
    inputs
        .get(i)
        .and_then(|s| s.as_ref())
        .ok_or_else(|| format!("input {i} is missing"))
}

fn infer_unchecked(op: &Op, inputs: &[Option<Shape>]) -> Result<Shape, String> {
    let input = |i: usize| input_shape(inputs, i);
    let x = input(0)?;
    match op {
        Op::Conv(conv) => {
            let w = input(1)?;
            if x.rank() != 4 || w.rank() != 4 {
                return Err(format!(
                    "only 2-D convolutions are supported: input {x}, weight {w}"
                ));
            }
            let c = fixed_dim(x, 1, "input channels")?;
            let m = fixed_dim(w, 0, "weight output channels")?;
            let cg = fixed_dim(w, 1, "weight input channels")?;
            let (kh, kw) = (fixed_dim(w, 2, "kernel")?, fixed_dim(w, 3, "kernel")?);
            let g = conv.group;
            if g == 0 || c % g != 0 || m % g != 0 || cg.checked_mul(g) != Some(c) {
                return Err(format!(
                    "input has {c} channels, weight {w} with group {g} expects {cg} × {g} (input and output channels must divide by group)"
                ));
            }
            if [kh, kw] != conv.window.kernel {
                return Err(format!(
                    "kernel_shape {:?} does not match the weight {w}",
                    conv.window.kernel
                ));
            }
            if let Some(b) = inputs.get(2).and_then(|s| s.as_ref()) {
                if b.as_fixed() != Some(vec![m]) {
                    return Err(format!("bias {b} must be [{m}]"));
                }
            }
            let (h, wd) = (
                fixed_dim(x, 2, "input height")?,
                fixed_dim(x, 3, "input width")?,
            );
            let (_, [oh, ow]) = conv.window.resolve(h, wd)?;
            Ok(Shape(vec![
                x.0[0],
                Dim::Fixed(m),
                Dim::Fixed(oh),
                Dim::Fixed(ow),
            ]))
        }
        Op::Pool { window, kind } => {
            if x.rank() != 4 {
                return Err(format!("only 2-D pooling is supported: input {x}"));
            }
            if matches!(kind, PoolKind::Average { .. }) && window.dilations != [1, 1] {
                return Err("AveragePool with dilations is not supported".into());
            }
            let (h, wd) = (
                fixed_dim(x, 2, "input height")?,
                fixed_dim(x, 3, "input width")?,
            );
            let (_, [oh, ow]) = window.resolve(h, wd)?;
            Ok(Shape(vec![x.0[0], x.0[1], Dim::Fixed(oh), Dim::Fixed(ow)]))
        }
        Op::GlobalAveragePool => {
            if x.rank() < 3 {
                return Err(format!("input {x} has no spatial axes"));
            }
            let mut out = x.0.clone();
            for d in &mut out[2..] {
                *d = Dim::Fixed(1);
            }
            Ok(Shape(out))
        }
        Op::Gemm(g) => {
            let b = input(1)?;
            if x.rank() != 2 || b.rank() != 2 {
                return Err(format!("Gemm needs 2-D inputs, got {x} and {b}"));
            }
            let (rows, k) = if g.trans_a {
                (x.0[1], x.0[0])
            } else {
                (x.0[0], x.0[1])
            };
            let (kb, cols) = if g.trans_b {
                (b.0[1], b.0[0])
            } else {
                (b.0[0], b.0[1])
            };
            if k != kb || matches!(k, Dim::Batch) {
                return Err(format!(
                    "inner dimensions differ: A {x} (transA {}), B {b} (transB {})",
                    g.trans_a, g.trans_b
                ));
            }
            let out = Shape(vec![rows, cols]);
            if let Some(c) = inputs.get(2).and_then(|s| s.as_ref()) {
                let bc = broadcast(&out, c)?;
                if bc != out {
                    return Err(format!("C {c} does not broadcast to the output {out}"));
                }
            }
            Ok(out)
        }
        Op::MatMul => {
            let b = input(1)?;
            if x.rank() < 2 || b.rank() < 2 {
                return Err(format!(
                    "MatMul of 1-D operands is not supported: {x} × {b}"
                ));
            }
            let k = x.0[x.rank() - 1];
            if k != b.0[b.rank() - 2] || k == Dim::Batch {
                return Err(format!("inner dimensions differ: {x} × {b}"));
            }
            let lead = broadcast(
                &Shape(x.0[..x.rank() - 2].to_vec()),
                &Shape(b.0[..b.rank() - 2].to_vec()),
            )?;
            let mut out = lead.0;
            out.push(x.0[x.rank() - 2]);
            out.push(b.0[b.rank() - 1]);
            Ok(Shape(out))
        }
        Op::BatchNorm { .. } => {
            if x.rank() < 2 {
                return Err(format!("input {x} has no channel axis"));
            }
            let c = fixed_dim(x, 1, "channels")?;
            for i in 1..5 {
                let p = input(i)?;
                if p.as_fixed() != Some(vec![c]) {
                    return Err(format!("parameter {i} is {p}, expected [{c}]"));
                }
            }
            Ok(x.clone())
        }
        Op::Unary(_) | Op::Identity => Ok(x.clone()),
        Op::Binary(_) => broadcast(x, input(1)?),
        Op::Flatten { axis } => {
            if *axis > x.rank() {
                return Err(format!("axis {axis} is out of range for {x}"));
            }
            Ok(Shape(vec![
                product(&x.0[..*axis])?,
                product(&x.0[*axis..])?,
            ]))
        }
        Op::Reshape { shape, allow_zero } => reshape(x, shape, *allow_zero),
        Op::Concat { axis } => {
            let mut out = x.clone();
            if *axis >= x.rank() {
                return Err(format!("axis {axis} is out of range for {x}"));
            }
            let mut total = fixed_dim(x, *axis, "concat axis")?;
            for i in 1..inputs.len() {
                let s = input(i)?;
                let same_elsewhere =
                    s.rank() == x.rank() && (0..x.rank()).all(|a| a == *axis || s.0[a] == x.0[a]);
                if !same_elsewhere {
                    return Err(format!(
                        "input {i} is {s}, input 0 is {x}: they must agree off axis {axis}"
                    ));
                }
                total = add(total, fixed_dim(s, *axis, "concat axis")?, "concat axis")?;
            }
            out.0[*axis] = Dim::Fixed(total);
            Ok(out)
        }
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => {
            let mut out = x.clone();
            for (i, &axis) in axes.iter().enumerate() {
                if axis >= x.rank() {
                    return Err(format!("axis {axis} is out of range for {x}"));
                }
                let d = fixed_dim(x, axis, "sliced axis")?;
                let (_, count) = slice_range(d, starts[i], ends[i], steps[i]);
                out.0[axis] = Dim::Fixed(count);
            }
            Ok(out)
        }
        Op::Pad { pads, .. } => {
            if pads.len() != 2 * x.rank() {
                return Err(format!(
                    "pads has {} values, input {x} needs {}",
                    pads.len(),
                    2 * x.rank()
                ));
            }
            let mut out = x.clone();
            for a in 0..x.rank() {
                let (b, e) = (pads[a], pads[a + x.rank()]);
                if b == 0 && e == 0 {
                    continue;
                }
                let d = fixed_dim(x, a, "padded axis")? as i128;
                let n = d + b as i128 + e as i128;
                if n < 0 {
                    return Err(format!("pads {pads:?} crop axis {a} of {x} below zero"));
                }
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= MAX_ELEMENTS)
                    .ok_or_else(|| {
                        format!("pads {pads:?} make axis {a} of {x} {n} long: too large")
                    })?;
                out.0[a] = Dim::Fixed(n);
            }
            Ok(out)
        }
        Op::Gather {
            axis,
            indices,
            index_dims,
        } => {
            let len = fixed_dim(x, *axis, "gathered axis")?;
            if let Some(i) = indices.iter().find(|&&i| i >= len) {
                return Err(format!("index {i} is out of range for axis {axis} of {x}"));
            }
            let mut out = x.0[..*axis].to_vec();
            out.extend(index_dims.iter().map(|&d| Dim::Fixed(d)));
            out.extend(&x.0[*axis + 1..]);
            Ok(Shape(out))
        }
        Op::Expand { shape } => broadcast(x, &Shape(shape.clone())),
        Op::Constant => Err("a Constant has no input shape to infer from".into()),
        Op::Softmax { axis, .. } => {
            if *axis >= x.rank() {
                return Err(format!("axis {axis} is out of range for {x}"));
            }
            Ok(x.clone())
        }
        other => Err(format!("{} is shaped by shape_ops", other.kind())),
    }
}

/// ONNX Slice clamping for one axis of size `d`: the first index and the element count.
pub fn slice_range(d: usize, start: i64, end: i64, step: i64) -> (i64, usize) {
    let d = d as i64;
    let norm = |v: i64| if v < 0 { v + d } else { v };
    let (s, e) = (norm(start), norm(end));
    if step > 0 {
        let s = s.clamp(0, d);
        let e = e.clamp(0, d);
        // (e − s − 1) / step + 1 rather than (e − s + step − 1) / step: no overflow for huge steps.
        let count = if e > s { (e - s - 1) / step + 1 } else { 0 };
        (s, count as usize)
    } else {
        let s = s.clamp(-1, d - 1);
        let e = e.clamp(-1, d - 1);
        // unsigned_abs: −i64::MIN overflows.
        let count = if s > e {
            ((s - e - 1) as u64 / step.unsigned_abs() + 1) as usize
        } else {
            0
        };
        (s, count)
    }
}

fn reshape(x: &Shape, target: &[i64], allow_zero: bool) -> Result<Shape, String> {
    let mut out: Vec<Option<Dim>> = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        out.push(match t {
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err(format!("shape {target:?} has more than one −1"));
                }
                None
            }
            0 if !allow_zero => Some(
                *x.0.get(i)
                    .ok_or_else(|| format!("shape {target:?} copies axis {i} that {x} lacks"))?,
            ),
            t if t >= 0 => Some(Dim::Fixed(t as usize)),
            t => return Err(format!("shape {target:?} has the invalid size {t}")),
        });
    }
    let input_batch = x.0.contains(&Dim::Batch);
    let known: Vec<Dim> = out.iter().flatten().copied().collect();
    let known_batch = known.contains(&Dim::Batch);
    let in_fixed = x.checked_per_batch_item()?;
    let known_fixed = Shape(known.clone())
        .checked_per_batch_item()
        .map_err(|e| format!("target {target:?}: {e}"))?;
    match infer_at {
        Some(i) => {
            if known_fixed == 0 || !in_fixed.is_multiple_of(known_fixed) {
                return Err(format!("cannot reshape {x} to {target:?}"));
            }
            let rest = in_fixed / known_fixed;
            out[i] = Some(match (input_batch, known_batch) {
                (true, false) if rest == 1 => Dim::Batch,
                (true, true) | (false, false) => Dim::Fixed(rest),
                _ => {
                    return Err(format!(
                        "reshaping {x} to {target:?} would mix the batch with other axes"
                    ))
                }
            });
        }
        None => {
            if input_batch != known_batch || in_fixed != known_fixed {
                return Err(format!(
                    "cannot reshape {x} to {target:?} for every batch size"
                ));
            }
        }
    }
    Ok(Shape(out.into_iter().map(|d| d.expect("filled")).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_matches_python_semantics() {
        // Brute force: Python's range semantics over an axis of 7, for many (start, end, step).
        for start in -9i64..9 {
            for end in [-9i64, -3, -1, 0, 2, 5, 7, 9, i64::MAX, i64::MIN] {
                for step in [-3i64, -1, 1, 2, 3] {
                    let d = 7i64;
                    let (first, count) = slice_range(7, start, end, step);
                    let picked: Vec<i64> = (0..count as i64).map(|k| first + k * step).collect();
                    // Reference: follow the ONNX spec's clamping literally, index by index.
                    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
                    let (s, e) = (norm(start), norm(end));
                    let mut expect = vec![];
                    if step > 0 {
                        let mut i = s.clamp(0, d);
                        while i < e.clamp(0, d) {
                            expect.push(i);
                            i += step;
                        }
                    } else {
                        let mut i = s.clamp(-1, d - 1);
                        while i > e.clamp(-1, d - 1) {
                            expect.push(i);
                            i += step;
                        }
                    }
                    assert_eq!(picked, expect, "start {start} end {end} step {step}");
                }
            }
        }
    }

    #[test]
    fn huge_sizes_are_errors_not_wrapped_products() {
        use crate::ir::op::PadMode;
        let x = Shape(vec![Dim::Batch, Dim::Fixed(3), Dim::Fixed(8)]);
        let pad = |pads: Vec<i64>| Op::Pad {
            mode: PadMode::Constant,
            pads,
            value: 0.0,
        };
        for pads in [
            vec![0, 0, i64::MAX, 0, 0, i64::MAX],
            vec![0, 0, 1 << 62, 0, 0, 0],
        ] {
            let e = infer(&pad(pads.clone()), &[Some(x.clone())]).unwrap_err();
            assert!(
                e.contains("too large") || e.contains("more than"),
                "{pads:?}: {e}"
            );
        }
        // Concat of two halves of the address range.
        let half = Shape(vec![Dim::Batch, Dim::Fixed(usize::MAX / 2 + 1)]);
        let e = infer(&Op::Concat { axis: 1 }, &[Some(half.clone()), Some(half)]).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        // Flatten and Reshape of an image that is too large.
        let big = Shape(vec![Dim::Batch, Dim::Fixed(1 << 40), Dim::Fixed(1 << 40)]);
        assert!(infer(&Op::Flatten { axis: 1 }, &[Some(big.clone())]).is_err());
        let to = Op::Reshape {
            shape: vec![0, -1],
            allow_zero: false,
        };
        assert!(infer(&to, &[Some(big)]).is_err());
        let to = Op::Reshape {
            shape: vec![1 << 40, 1 << 40, -1],
            allow_zero: false,
        };
        assert!(infer(&to, &[Some(x)]).unwrap_err().contains("more than"));
        // Slices with the most extreme steps count without overflowing.
        assert_eq!(slice_range(7, 0, 7, i64::MAX), (0, 1));
        assert_eq!(slice_range(7, 6, i64::MIN, i64::MIN), (6, 1));
        assert_eq!(slice_range(7, -1, -8, -1), (6, 7));
    }

    #[test]
    fn reshape_keeps_the_batch_symbolic() {
        let x = Shape(vec![
            Dim::Batch,
            Dim::Fixed(512),
            Dim::Fixed(1),
            Dim::Fixed(1),
        ]);
        assert_eq!(
            reshape(&x, &[-1, 512], false).unwrap(),
            Shape(vec![Dim::Batch, Dim::Fixed(512)])
        );
        assert_eq!(
            reshape(&x, &[0, -1], false).unwrap(),
            Shape(vec![Dim::Batch, Dim::Fixed(512)])
        );
        assert!(reshape(&x, &[-1, 256], false).is_err());
        assert!(reshape(&x, &[1, 512], false).is_err());
    }
}
