//! Evaluators of the ops that move values without computing new ones: Shape, Identity, Gather,
//! Unsqueeze, Squeeze, Concat, Reshape, Flatten, Transpose, Slice, Expand.

use super::{axis, broadcast, strided, strides, Data, Int, Known, Site};
use crate::ir::shape::slice_range;
use crate::ir::Dim;

type Folded = Result<Option<Known>, String>;

fn with_dims(x: &Known, dims: Vec<usize>) -> Folded {
    Known::new(dims, x.data.clone()).map(Some)
}

pub(super) fn shape(s: &Site<'_>) -> Folded {
    let shape = s.shapes[0].ok_or("input 0 has no shape")?;
    let rank = shape.rank() as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let (start, end) = (clamp(s.int("start", 0)), clamp(s.int("end", rank)));
    let dims: Vec<Int> = shape.0[start..end.max(start)]
        .iter()
        .map(|d| match d {
            Dim::Batch => Int::Batch,
            Dim::Fixed(v) => Int::Num(*v as i64),
        })
        .collect();
    Known::new(vec![dims.len()], Data::Int(dims)).map(Some)
}

pub(super) fn identity(s: &Site<'_>) -> Folded {
    Ok(Some(s.input(0)?.clone()))
}

pub(super) fn gather(s: &Site<'_>) -> Folded {
    let (x, indices) = (s.input(0)?, s.input(1)?);
    let a = axis(s.int("axis", 0), x.dims.len())?;
    let len = x.dims[a] as i64;
    let picked = indices
        .numbers("the indices")?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + len } else { i };
            (0..len)
                .contains(&j)
                .then_some(j as usize)
                .ok_or_else(|| format!("index {i} is out of range for axis {a} of {:?}", x.dims))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outer: usize = x.dims[..a].iter().product();
    let inner: usize = x.dims[a + 1..].iter().product();
    let mut picks = Vec::with_capacity(outer * picked.len() * inner);
    for o in 0..outer {
        for &j in &picked {
            picks.extend((0..inner).map(|k| (o * x.dims[a] + j) * inner + k));
        }
    }
    let mut dims = x.dims[..a].to_vec();
    dims.extend(&indices.dims);
    dims.extend(&x.dims[a + 1..]);
    Known::new(dims, x.data.pick(picks.into_iter())).map(Some)
}

pub(super) fn unsqueeze(s: &Site<'_>) -> Folded {
    let x = s.input(0)?;
    let given = s.numbers(1, "axes")?.ok_or("the axes are missing")?;
    let rank = x.dims.len() + given.len();
    let mut axes = given
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    axes.sort_unstable();
    axes.dedup();
    if axes.len() != given.len() {
        return Err(format!("axes {given:?} repeat an axis"));
    }
    let mut rest = x.dims.iter();
    let dims = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                *rest.next().expect("rank")
            }
        })
        .collect();
    with_dims(x, dims)
}

pub(super) fn squeeze(s: &Site<'_>) -> Folded {
    let x = s.input(0)?;
    let axes = match s.numbers(1, "axes")? {
        Some(given) => given
            .iter()
            .map(|&a| axis(a, x.dims.len()))
            .collect::<Result<Vec<_>, _>>()?,
        None => (0..x.dims.len()).filter(|&i| x.dims[i] == 1).collect(),
    };
    if let Some(&a) = axes.iter().find(|&&a| x.dims[a] != 1) {
        return Err(format!("axis {a} of {:?} is not 1", x.dims));
    }
    let dims = (0..x.dims.len())
        .filter(|i| !axes.contains(i))
        .map(|i| x.dims[i])
        .collect();
    with_dims(x, dims)
}

pub(super) fn concat(s: &Site<'_>) -> Folded {
    let parts = (0..s.known.len())
        .map(|i| s.input(i))
        .collect::<Result<Vec<_>, _>>()?;
    let first = parts.first().ok_or("Concat has no input")?;
    let a = axis(s.int("axis", i64::MIN), first.dims.len())
        .map_err(|e| format!("attribute 'axis': {e}"))?;
    let mut dims = first.dims.clone();
    dims[a] = 0;
    for p in &parts {
        let same = p.dims.len() == first.dims.len()
            && (0..dims.len()).all(|i| i == a || p.dims[i] == first.dims[i]);
        if !same || std::mem::discriminant(&p.data) != std::mem::discriminant(&first.data) {
            return Err(format!(
                "inputs {:?} and {:?} do not concatenate along axis {a}",
                first.dims, p.dims
            ));
        }
        dims[a] += p.dims[a];
    }
    let outer: usize = dims[..a].iter().product();
    // Concatenate whole blocks: each input's block for an outer index is contiguous.
    let mut data = first.data.pick(std::iter::empty());
    for o in 0..outer {
        for p in &parts {
            let block: usize = p.dims[a..].iter().product();
            let more = p.data.pick(o * block..(o + 1) * block);
            match (&mut data, more) {
                (Data::F32(d), Data::F32(m)) => d.extend(m),
                (Data::Int(d), Data::Int(m)) => d.extend(m),
                (Data::Bool(d), Data::Bool(m)) => d.extend(m),
                _ => unreachable!("types checked above"),
            }
        }
    }
    Known::new(dims, data).map(Some)
}

pub(super) fn reshape(s: &Site<'_>) -> Folded {
    let x = s.input(0)?;
    let target = s.numbers(1, "the shape")?.ok_or("the shape is missing")?;
    let allow_zero = s.int("allowzero", 0) != 0;
    let total = x.data.len();
    let mut infer = None;
    let mut dims = Vec::with_capacity(target.len());
    for (i, &t) in target.iter().enumerate() {
        dims.push(match t {
            -1 if infer.replace(i).is_none() => 1,
            0 if !allow_zero => *x
                .dims
                .get(i)
                .ok_or(format!("shape {target:?} copies a missing axis"))?,
            t if t >= 0 => t as usize,
            _ => return Err(format!("shape {target:?} is not a valid Reshape target")),
        });
    }
    if let Some(i) = infer {
        let known: usize = dims.iter().product();
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {:?} to {target:?}", x.dims));
        }
        dims[i] = total / known;
    }
    with_dims(x, dims)
}

pub(super) fn flatten(s: &Site<'_>) -> Folded {
    let x = s.input(0)?;
    let rank = x.dims.len() as i64;
    let a = s.int("axis", 1);
    let a = if a < 0 { a + rank } else { a };
    if !(0..=rank).contains(&a) {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    let (head, tail) = x.dims.split_at(a as usize);
    with_dims(x, vec![head.iter().product(), tail.iter().product()])
}

pub(super) fn transpose(s: &Site<'_>) -> Folded {
    let x = s.input(0)?;
    let rank = x.dims.len();
    let perm: Vec<usize> = match s.attr("perm") {
        Some(p) => p
            .ints
            .iter()
            .map(|&a| axis(a, rank))
            .collect::<Result<_, _>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..rank).collect::<Vec<_>>() {
        return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
    }
    let st = strides(&x.dims);
    let dims: Vec<usize> = perm.iter().map(|&p| x.dims[p]).collect();
    let out_strides: Vec<i64> = perm.iter().map(|&p| st[p]).collect();
    let picks = strided(&dims, &out_strides, 0);
    Known::new(dims, x.data.pick(picks.into_iter())).map(Some)
}

pub(super) fn slice(s: &Site<'_>) -> Folded {
    let x = s.input(0)?;
    let rank = x.dims.len();
    let starts = s.numbers(1, "starts")?.ok_or("starts is missing")?;
    let ends = s.numbers(2, "ends")?.ok_or("ends is missing")?;
    let axes = match s.numbers(3, "axes")? {
        Some(a) => a
            .iter()
            .map(|&v| axis(v, rank))
            .collect::<Result<Vec<_>, _>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = s.numbers(4, "steps")?.unwrap_or(vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?}, steps {steps:?} must have equal lengths"
        ));
    }
    let st = strides(&x.dims);
    let (mut dims, mut out_strides, mut offset) = (x.dims.clone(), st.clone(), 0i64);
    for (k, &a) in axes.iter().enumerate() {
        if steps[k] == 0 {
            return Err("a step is 0".into());
        }
        let (first, count) = slice_range(x.dims[a], starts[k], ends[k], steps[k]);
        dims[a] = count;
        out_strides[a] = st[a] * steps[k];
        offset += first.max(0) * st[a];
    }
    if dims.contains(&0) {
        return Known::new(dims, x.data.pick(std::iter::empty())).map(Some);
    }
    let picks = strided(&dims, &out_strides, offset);
    Known::new(dims, x.data.pick(picks.into_iter())).map(Some)
}

pub(super) fn expand(s: &Site<'_>) -> Folded {
    let x = s.input(0)?;
    let Some(target) = s.sizes(1)? else {
        return Ok(None);
    };
    let dims = broadcast(&[&x.dims, &target])?;
    Known::count(&dims)?;
    let picks = super::broadcast_indices(&x.dims, &dims);
    Known::new(dims, x.data.pick(picks.into_iter())).map(Some)
}
