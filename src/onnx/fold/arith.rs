//! Evaluators of the ops that compute: ConstantOfShape, Range, Cast, Where, comparisons, Not,
//! Add/Sub/Mul/Div (floats and integers, the batch kept through identities), Neg, Sqrt.

use super::{broadcast, broadcast_indices, Data, Int, Known, Site};
use crate::onnx::proto::tensor_proto::DataType;

type Folded = Result<Option<Known>, String>;

pub(super) fn constant_of_shape(s: &Site<'_>) -> Folded {
    let Some(dims) = s.sizes(0)? else {
        return Ok(None);
    };
    let count = Known::count(&dims)?;
    let fill = match s.attr("value").and_then(|a| a.t.as_ref()) {
        None => Known::new(vec![], Data::F32(vec![0.0]))?,
        Some(t) => Known::from_constant(&crate::onnx::decode_tensor(t)?),
    };
    if fill.data.len() != 1 {
        return Err(format!(
            "value must hold one element, holds {}",
            fill.data.len()
        ));
    }
    Known::new(dims, fill.data.pick(std::iter::repeat_n(0, count))).map(Some)
}

pub(super) fn range(s: &Site<'_>) -> Folded {
    let (start, limit, delta) = (s.input(0)?, s.input(1)?, s.input(2)?);
    let data = match (&start.data, &limit.data, &delta.data) {
        (Data::F32(a), Data::F32(b), Data::F32(d))
            if a.len() == 1 && b.len() == 1 && d.len() == 1 =>
        {
            let (a, b, d) = (a[0] as f64, b[0] as f64, d[0] as f64);
            let n = ((b - a) / d).ceil().max(0.0);
            if !n.is_finite() || n as usize > super::MAX_FOLDED {
                return Err(format!("Range({a}, {b}, {d}) is too long to fold"));
            }
            Data::F32((0..n as usize).map(|i| (a + i as f64 * d) as f32).collect())
        }
        _ => {
            let one = |k: &Known, what: &str| -> Result<i64, String> {
                match k.numbers(what)?.as_slice() {
                    [v] => Ok(*v),
                    v => Err(format!("{what} must be one value, got {v:?}")),
                }
            };
            let (a, b, d) = (
                one(start, "start")?,
                one(limit, "limit")?,
                one(delta, "delta")?,
            );
            if d == 0 {
                return Err("delta is 0".into());
            }
            let n = ((b as i128 - a as i128) as f64 / d as f64).ceil().max(0.0);
            if n as usize > super::MAX_FOLDED {
                return Err(format!("Range({a}, {b}, {d}) is too long to fold"));
            }
            Data::Int((0..n as i64).map(|i| Int::Num(a + i * d)).collect())
        }
    };
    Known::new(vec![data.len()], data).map(Some)
}

pub(super) fn cast(s: &Site<'_>) -> Folded {
    let x = s.input(0)?;
    let to = s.int("to", 0) as i32;
    let float = [
        DataType::Float as i32,
        DataType::Double as i32,
        DataType::Float16 as i32,
    ];
    let data = if float.contains(&to) {
        Data::F32(match &x.data {
            Data::F32(v) => v.clone(),
            Data::Bool(v) => v.iter().map(|&b| b as i32 as f32).collect(),
            Data::Int(_) => x
                .numbers("a Cast to float")?
                .iter()
                .map(|&v| v as f32)
                .collect(),
        })
    } else if to == DataType::Bool as i32 {
        Data::Bool(match &x.data {
            Data::F32(v) => v.iter().map(|&f| f != 0.0).collect(),
            Data::Bool(v) => v.clone(),
            Data::Int(_) => x
                .numbers("a Cast to bool")?
                .iter()
                .map(|&v| v != 0)
                .collect(),
        })
    } else if DataType::try_from(to).is_ok_and(|t| t.as_str_name().contains("INT")) {
        Data::Int(match &x.data {
            // Towards zero, as C casts (onnxruntime).
            Data::F32(v) => v.iter().map(|&f| Int::Num(f as i64)).collect(),
            Data::Bool(v) => v.iter().map(|&b| Int::Num(b as i64)).collect(),
            Data::Int(v) => v.clone(),
        })
    } else {
        return Err(format!("Cast to element type {to} is not supported"));
    };
    Known::new(x.dims.clone(), data).map(Some)
}

/// Inputs broadcast to one shape: the output dims and each input's values at every output index.
fn aligned(s: &Site<'_>, count: usize) -> Result<(Vec<usize>, Vec<Data>), String> {
    let inputs = (0..count)
        .map(|i| s.input(i))
        .collect::<Result<Vec<_>, _>>()?;
    let all: Vec<&[usize]> = inputs.iter().map(|k| k.dims.as_slice()).collect();
    let dims = broadcast(&all)?;
    Known::count(&dims)?;
    let data = inputs
        .iter()
        .map(|k| k.data.pick(broadcast_indices(&k.dims, &dims).into_iter()))
        .collect();
    Ok((dims, data))
}

pub(super) fn where_(s: &Site<'_>) -> Folded {
    let (dims, mut d) = aligned(s, 3)?;
    let (y, x, cond) = (
        d.pop().expect("3"),
        d.pop().expect("3"),
        d.pop().expect("3"),
    );
    let cond: Vec<bool> = match cond {
        Data::Bool(c) => c,
        _ => return Err("the condition must be boolean".into()),
    };
    let choose = |i: usize| if cond[i] { 0 } else { 1 };
    let data = match (x, y) {
        (Data::F32(a), Data::F32(b)) => {
            Data::F32((0..cond.len()).map(|i| [a[i], b[i]][choose(i)]).collect())
        }
        (Data::Int(a), Data::Int(b)) => {
            Data::Int((0..cond.len()).map(|i| [a[i], b[i]][choose(i)]).collect())
        }
        (Data::Bool(a), Data::Bool(b)) => {
            Data::Bool((0..cond.len()).map(|i| [a[i], b[i]][choose(i)]).collect())
        }
        _ => return Err("X and Y have different element types".into()),
    };
    Known::new(dims, data).map(Some)
}

/// How two integers compare, the batch being at least 1: it equals itself and exceeds any
/// number below 1 (PyTorch's exports test a shape entry against −1); other comparisons of the
/// batch are refused.
fn order(a: Int, b: Int) -> Result<std::cmp::Ordering, String> {
    use std::cmp::Ordering;
    match (a, b) {
        (Int::Num(x), Int::Num(y)) => Ok(x.cmp(&y)),
        (Int::Batch, Int::Batch) => Ok(Ordering::Equal),
        (Int::Batch, Int::Num(n)) if n < 1 => Ok(Ordering::Greater),
        (Int::Num(n), Int::Batch) if n < 1 => Ok(Ordering::Less),
        _ => Err(format!(
            "comparing the batch size with {a:?} {b:?} depends on the data"
        )),
    }
}

/// An element-wise comparison of two tensors of one type.
fn compare(s: &Site<'_>, f: fn(std::cmp::Ordering) -> bool) -> Folded {
    let (dims, d) = aligned(s, 2)?;
    let out: Vec<bool> = match (&d[0], &d[1]) {
        (Data::F32(a), Data::F32(b)) => a
            .iter()
            .zip(b)
            .map(|(x, y)| x.partial_cmp(y).is_some_and(f))
            .collect(),
        (Data::Int(a), Data::Int(b)) => a
            .iter()
            .zip(b)
            .map(|(x, y)| order(*x, *y).map(f))
            .collect::<Result<_, _>>()?,

        (Data::Bool(a), Data::Bool(b)) => a.iter().zip(b).map(|(x, y)| f(x.cmp(y))).collect(),
        _ => return Err("the operands have different element types".into()),
    };
    Known::new(dims, Data::Bool(out)).map(Some)
}

pub(super) fn equal(s: &Site<'_>) -> Folded {
    compare(s, |o| o.is_eq())
}

pub(super) fn less(s: &Site<'_>) -> Folded {
    compare(s, |o| o.is_lt())
}

pub(super) fn greater(s: &Site<'_>) -> Folded {
    compare(s, |o| o.is_gt())
}

pub(super) fn less_or_equal(s: &Site<'_>) -> Folded {
    compare(s, |o| o.is_le())
}

pub(super) fn greater_or_equal(s: &Site<'_>) -> Folded {
    compare(s, |o| o.is_ge())
}

pub(super) fn not(s: &Site<'_>) -> Folded {
    let x = s.input(0)?;
    match &x.data {
        Data::Bool(v) => {
            Known::new(x.dims.clone(), Data::Bool(v.iter().map(|b| !b).collect())).map(Some)
        }
        _ => Err("Not needs a boolean input".into()),
    }
}

/// `a op b` on integers where either may be the batch: only identities keep it (`N·1`, `N/1`,
/// `N±0`); anything else is refused.
fn int_op(op: char, a: Int, b: Int) -> Result<Int, String> {
    let batch_err = || format!("{a:?} {op} {b:?} mixes the batch size with other numbers");
    Ok(match (a, b) {
        (Int::Num(x), Int::Num(y)) => Int::Num(
            match op {
                '+' => x.checked_add(y),
                '-' => x.checked_sub(y),
                '*' => x.checked_mul(y),
                _ => x.checked_div(y),
            }
            .ok_or_else(|| format!("{x} {op} {y} overflows or divides by zero"))?,
        ),
        (Int::Batch, Int::Num(0)) if matches!(op, '+' | '-') => Int::Batch,
        (Int::Num(0), Int::Batch) if op == '+' => Int::Batch,
        (Int::Batch, Int::Num(1)) if matches!(op, '*' | '/') => Int::Batch,
        (Int::Num(1), Int::Batch) if op == '*' => Int::Batch,
        _ => return Err(batch_err()),
    })
}

fn arithmetic(s: &Site<'_>, op: char) -> Folded {
    let (dims, d) = aligned(s, 2)?;
    let data = match (&d[0], &d[1]) {
        (Data::F32(a), Data::F32(b)) => Data::F32(
            a.iter()
                .zip(b)
                .map(|(&x, &y)| match op {
                    '+' => x + y,
                    '-' => x - y,
                    '*' => x * y,
                    _ => x / y,
                })
                .collect(),
        ),
        (Data::Int(a), Data::Int(b)) => Data::Int(
            a.iter()
                .zip(b)
                .map(|(&x, &y)| int_op(op, x, y))
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err("the operands have different element types".into()),
    };
    Known::new(dims, data).map(Some)
}

pub(super) fn add(s: &Site<'_>) -> Folded {
    arithmetic(s, '+')
}

pub(super) fn sub(s: &Site<'_>) -> Folded {
    arithmetic(s, '-')
}

pub(super) fn mul(s: &Site<'_>) -> Folded {
    arithmetic(s, '*')
}

pub(super) fn div(s: &Site<'_>) -> Folded {
    arithmetic(s, '/')
}

pub(super) fn neg(s: &Site<'_>) -> Folded {
    let x = s.input(0)?;
    let data = match &x.data {
        Data::F32(v) => Data::F32(v.iter().map(|f| -f).collect()),
        Data::Int(_) => Data::Int(
            x.numbers("Neg's input")?
                .iter()
                .map(|&v| Int::Num(-v))
                .collect(),
        ),
        Data::Bool(_) => return Err("Neg of booleans".into()),
    };
    Known::new(x.dims.clone(), data).map(Some)
}

pub(super) fn sqrt(s: &Site<'_>) -> Folded {
    match &s.input(0)?.data {
        Data::F32(v) => {
            let x = s.input(0)?;
            Known::new(
                x.dims.clone(),
                Data::F32(v.iter().map(|f| f.sqrt()).collect()),
            )
            .map(Some)
        }
        _ => Err("Sqrt needs float input".into()),
    }
}
