//! Constant folding at load (what onnxsim does): a node whose inputs are all known before a run —
//! initializers, `Constant`s, earlier folded nodes, and the `Shape` of any value (shapes are known
//! once the input shape is) — is evaluated here and becomes a constant, so that `Shape → Gather →
//! Unsqueeze → Concat → Reshape` chains, `Reshape(Constant)` biases and weights written as a
//! `Transpose` of an initializer reach the executors and the analysis as plain constants.
//!
//! Integer tensors may hold the batch size, symbolic ([`Int::Batch`]): `Shape(x)[0]` is the batch
//! whatever the data. It survives moves (Gather, Slice, Concat, Unsqueeze, …), the identities
//! `N·1`, `N/1`, `N±0` and comparisons that hold for every batch (`N = −1` is false); a Reshape
//! or Expand target takes it ([`crate::onnx::import`]); any other use is an
//! error that says so. One evaluator per op, in [`EVALUATORS`] (files `fold/*.rs` by kind).

mod arith;
mod moves;

use super::proto;
use crate::ir::{ConstData, Constant, Shape};

/// The most values one folded tensor may hold (a `ConstantOfShape` or `Expand` of a huge shape
/// is refused rather than allocated).
pub const MAX_FOLDED: usize = 1 << 26;

/// One element of an integer tensor known at load: a number, or the batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int {
    /// A number.
    Num(i64),
    /// The batch size `N` (from the `Shape` of a value with a batch axis).
    Batch,
}

/// The values of a [`Known`] tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// Floats (FLOAT and DOUBLE).
    F32(Vec<f32>),
    /// Integers (INT64, INT32, …), possibly holding the batch.
    Int(Vec<Int>),
    /// Booleans (comparisons, `Where` conditions).
    Bool(Vec<bool>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::Int(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    /// The values at `picks` (indices into this tensor), same type.
    fn pick(&self, picks: impl Iterator<Item = usize>) -> Data {
        match self {
            Data::F32(v) => Data::F32(picks.map(|i| v[i]).collect()),
            Data::Int(v) => Data::Int(picks.map(|i| v[i]).collect()),
            Data::Bool(v) => Data::Bool(picks.map(|i| v[i]).collect()),
        }
    }
}

/// A tensor known at load.
#[derive(Clone, Debug, PartialEq)]
pub struct Known {
    /// Dimensions (empty for a scalar).
    pub dims: Vec<usize>,
    /// Row-major values.
    pub data: Data,
}

impl Known {
    /// The known value of an IR constant.
    pub fn from_constant(c: &Constant) -> Self {
        let data = match &c.data {
            ConstData::F32(v) => Data::F32(v.clone()),
            ConstData::I64(v) => Data::Int(v.iter().map(|&x| Int::Num(x)).collect()),
        };
        Known {
            dims: c.dims.clone(),
            data,
        }
    }

    /// As an IR constant: booleans as 0/1, the batch as 0 (Reshape's "copy this axis"; the exact
    /// meaning stays with the [`Known`] during the load).
    pub fn to_constant(&self) -> Constant {
        let data = match &self.data {
            Data::F32(v) => ConstData::F32(v.clone()),
            Data::Int(v) => ConstData::I64(
                v.iter()
                    .map(|x| match x {
                        Int::Num(n) => *n,
                        Int::Batch => 0,
                    })
                    .collect(),
            ),
            Data::Bool(v) => ConstData::I64(v.iter().map(|&b| b as i64).collect()),
        };
        Constant {
            dims: self.dims.clone(),
            data,
        }
    }

    /// Whether an element is the batch size.
    pub fn has_batch(&self) -> bool {
        matches!(&self.data, Data::Int(v) if v.contains(&Int::Batch))
    }

    /// The integers, or a message naming `what` (floats, booleans or the batch are refused).
    pub fn numbers(&self, what: &str) -> Result<Vec<i64>, String> {
        match &self.data {
            Data::Int(v) => v
                .iter()
                .map(|x| match x {
                    Int::Num(n) => Ok(*n),
                    Int::Batch => Err(format!(
                        "{what} depends on the batch size (it comes from a Shape); only a Reshape target may"
                    )),
                })
                .collect(),
            _ => Err(format!("{what} must be integers")),
        }
    }

    /// The element count implied by `dims`, or a message when it is too large to fold.
    fn count(dims: &[usize]) -> Result<usize, String> {
        dims.iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_FOLDED)
            .ok_or_else(|| format!("folding would make a tensor of shape {dims:?}: too large"))
    }

    fn new(dims: Vec<usize>, data: Data) -> Result<Self, String> {
        if Self::count(&dims)? != data.len() {
            return Err(format!(
                "shape {dims:?} does not hold {} values",
                data.len()
            ));
        }
        Ok(Known { dims, data })
    }
}

/// What an evaluator sees: the (normalised) node, its inputs' known values (`None` when omitted
/// or not known) and their IR shapes.
pub struct Site<'a> {
    /// The node.
    pub node: &'a proto::NodeProto,
    /// Known values of the inputs.
    pub known: Vec<Option<&'a Known>>,
    /// Shapes of the inputs (for `Shape`).
    pub shapes: Vec<Option<&'a Shape>>,
}

impl Site<'_> {
    fn attr(&self, name: &str) -> Option<&proto::AttributeProto> {
        super::attribute(self.node, name)
    }

    /// An integer attribute (or `default`).
    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).and_then(|a| a.i).unwrap_or(default)
    }

    /// Input `i`, known (the caller checked that every present input is).
    fn input(&self, i: usize) -> Result<&Known, String> {
        self.known
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("input {i} is missing"))
    }

    /// Input `i` as sizes (a shape input): `Ok(None)` where it holds the batch (not foldable).
    fn sizes(&self, i: usize) -> Result<Option<Vec<usize>>, String> {
        let k = self.input(i)?;
        if k.has_batch() {
            return Ok(None);
        }
        k.numbers("the shape")?
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("shape entry {d} is negative")))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Input `i` as numbers (`None` when omitted).
    fn numbers(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>, String> {
        match self.known.get(i).copied().flatten() {
            None => Ok(None),
            Some(k) => k.numbers(what).map(Some),
        }
    }
}

/// Evaluates one op on known inputs: `Ok(None)` where it cannot be folded (e.g. an `Expand` to
/// a shape that holds the batch), a message when the node is malformed.
pub type Eval = fn(&Site<'_>) -> Result<Option<Known>, String>;

/// The ops folded at load and their evaluators.
pub const EVALUATORS: &[(&str, Eval)] = &[
    ("Shape", moves::shape),
    ("Identity", moves::identity),
    ("Gather", moves::gather),
    ("Unsqueeze", moves::unsqueeze),
    ("Squeeze", moves::squeeze),
    ("Concat", moves::concat),
    ("Reshape", moves::reshape),
    ("Flatten", moves::flatten),
    ("Transpose", moves::transpose),
    ("Slice", moves::slice),
    ("Expand", moves::expand),
    ("ConstantOfShape", arith::constant_of_shape),
    ("Range", arith::range),
    ("Cast", arith::cast),
    ("Where", arith::where_),
    ("Equal", arith::equal),
    ("Less", arith::less),
    ("Greater", arith::greater),
    ("LessOrEqual", arith::less_or_equal),
    ("GreaterOrEqual", arith::greater_or_equal),
    ("Not", arith::not),
    ("Add", arith::add),
    ("Sub", arith::sub),
    ("Mul", arith::mul),
    ("Div", arith::div),
    ("Neg", arith::neg),
    ("Sqrt", arith::sqrt),
];

/// The folded value of `site`'s node, or `Ok(None)` when it is not foldable: its op has no
/// evaluator, an input is not known (`Shape` needs only its input's shape), or it has more than
/// one output in use.
pub fn fold(site: &Site<'_>) -> Result<Option<Known>, String> {
    let op = site.node.op_type.as_deref().unwrap_or("");
    if !matches!(
        site.node.domain.as_deref(),
        None | Some("") | Some("ai.onnx")
    ) {
        return Ok(None);
    }
    let Some((_, eval)) = EVALUATORS.iter().find(|(name, _)| *name == op) else {
        return Ok(None);
    };
    let outputs = site.node.output.iter().filter(|o| !o.is_empty()).count();
    let present = site
        .node
        .input
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty());
    let all_known = present
        .clone()
        .all(|(i, _)| site.known.get(i).copied().flatten().is_some());
    let shape_known = op == "Shape" && site.shapes.first().copied().flatten().is_some();
    if outputs != 1 || !(all_known || shape_known) {
        return Ok(None);
    }
    eval(site)
}

/// NumPy broadcast of dims, or a message.
fn broadcast(all: &[&[usize]]) -> Result<Vec<usize>, String> {
    let rank = all.iter().map(|d| d.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for dims in all {
        for (i, &d) in dims.iter().enumerate() {
            let slot = &mut out[rank - dims.len() + i];
            if *slot == 1 {
                *slot = d;
            } else if d != 1 && d != *slot {
                return Err(format!("shapes {all:?} do not broadcast"));
            }
        }
    }
    Ok(out)
}

/// For each element of a tensor of `out` dims, the index of the element of `dims` (broadcast to
/// `out`) it reads.
fn broadcast_indices(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let lead = out.len() - dims.len();
    let own = strides(dims);
    let steps: Vec<i64> = (0..out.len())
        .map(|a| match a.checked_sub(lead) {
            Some(i) if dims[i] != 1 => own[i],
            _ => 0,
        })
        .collect();
    strided(out, &steps, 0)
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<i64> {
    let mut out = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        out[i] = out[i + 1] * dims[i + 1] as i64;
    }
    out
}

/// Indices `offset + Σ idx·strides` for every index of `out` dims, row-major.
fn strided(out: &[usize], strides: &[i64], offset: i64) -> Vec<usize> {
    let total: usize = out.iter().product();
    let mut idx = vec![0usize; out.len()];
    let mut picks = Vec::with_capacity(total);
    for _ in 0..total {
        let at: i64 = idx.iter().zip(strides).map(|(&i, &s)| i as i64 * s).sum();
        picks.push((offset + at) as usize);
        for a in (0..out.len()).rev() {
            idx[a] += 1;
            if idx[a] < out[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    picks
}

/// A non-negative axis of a tensor of `rank`, or a message.
fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let n = if a < 0 { a + rank as i64 } else { a };
    usize::try_from(n)
        .ok()
        .filter(|&n| n < rank)
        .ok_or_else(|| format!("axis {a} is out of range for rank {rank}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Dim;

    fn ints(v: &[i64]) -> Known {
        Known {
            dims: vec![v.len()],
            data: Data::Int(v.iter().map(|&x| Int::Num(x)).collect()),
        }
    }

    fn node(op: &str, inputs: usize) -> proto::NodeProto {
        proto::NodeProto {
            op_type: Some(op.into()),
            input: (0..inputs).map(|i| format!("i{i}")).collect(),
            output: vec!["y".into()],
            ..Default::default()
        }
    }

    #[test]
    fn the_batch_survives_moves_and_identities_only() {
        let x = Shape(vec![Dim::Batch, Dim::Fixed(8), Dim::Fixed(4)]);
        let shape_node = node("Shape", 1);
        let site = Site {
            node: &shape_node,
            known: vec![None],
            shapes: vec![Some(&x)],
        };
        let s = fold(&site).unwrap().unwrap();
        assert_eq!(
            s.data,
            Data::Int(vec![Int::Batch, Int::Num(8), Int::Num(4)])
        );
        // Gather [0, 2] keeps the batch; N·1 is N; N·8 is refused with a message.
        let gather = node("Gather", 2);
        let idx = ints(&[0, 2]);
        let g = fold(&Site {
            node: &gather,
            known: vec![Some(&s), Some(&idx)],
            shapes: vec![None, None],
        })
        .unwrap()
        .unwrap();
        assert_eq!(g.data, Data::Int(vec![Int::Batch, Int::Num(4)]));
        let mul = node("Mul", 2);
        let (one, eight) = (ints(&[1, 1]), ints(&[8, 1]));
        let times = |k: &Known| {
            fold(&Site {
                node: &mul,
                known: vec![Some(&g), Some(k)],
                shapes: vec![None, None],
            })
        };
        assert_eq!(times(&one).unwrap().unwrap(), g);
        assert!(times(&eight).unwrap_err().contains("mixes the batch"));
        // PyTorch's `Where(Equal(shape, -1), …)`: the batch is never −1, and equals itself.
        let equal = node("Equal", 2);
        let compare = |k: &Known| {
            let site = Site {
                node: &equal,
                known: vec![Some(&g), Some(k)],
                shapes: vec![None, None],
            };
            fold(&site).map(|k| k.unwrap().data)
        };
        let minus = ints(&[-1, -1]);
        assert_eq!(compare(&minus), Ok(Data::Bool(vec![false, false])));
        assert_eq!(compare(&g), Ok(Data::Bool(vec![true, true])));
        assert!(compare(&one).unwrap_err().contains("batch size"));
        // An IR constant says the batch as 0 (Reshape's copy); as a number it is refused.
        assert_eq!(g.to_constant().i64(), Some(&[0, 4][..]));
        assert!(g.numbers("the shape").unwrap_err().contains("batch size"));
        // Not foldable: an input computed from data (not known), or an op without an evaluator.
        let add = node("Add", 2);
        let site = Site {
            node: &add,
            known: vec![None, Some(&one)],
            shapes: vec![None, None],
        };
        assert_eq!(fold(&site).unwrap(), None);
        let conv = node("Conv", 2);
        let site = Site {
            node: &conv,
            known: vec![Some(&one), Some(&one)],
            shapes: vec![None, None],
        };
        assert_eq!(fold(&site).unwrap(), None);
    }

    #[test]
    fn huge_folded_tensors_are_refused_before_allocating() {
        let node = node("ConstantOfShape", 1);
        let shape = ints(&[1 << 20, 1 << 20]);
        let site = Site {
            node: &node,
            known: vec![Some(&shape)],
            shapes: vec![None],
        };
        assert!(fold(&site).unwrap_err().contains("too large"));
    }
}
