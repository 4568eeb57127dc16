//! Channel rules of a channel shuffle (`Reshape (N, C, H, W) → (N, g, C/g, H, W)`, `Transpose`
//! of the two channel sub-axes, `Reshape` back): the channels may span several axes between the
//! two Reshapes ([`ChannelView::sub`]); positions are always the row-major flattening of those
//! sub-axes, so a Reshape that only splits or merges them keeps every position in place and a
//! Transpose of them permutes positions.
//!
//! The Reshapes' shape constants name the sub-axis sizes, so the kept positions of a split value
//! must form a product set (a kept index set per sub-axis). A split output therefore ties the
//! equal offsets of its last sub-axis across all the leading ones (for a shuffle: the same
//! channel in each of the `g` blocks): every kept set is then "all of the leading sub-axes ×
//! some offsets of the last", a product, and it stays one through the Transpose.

use super::rules::{ChannelView, EditKind, Link, Rule};
use crate::ir::Node;

fn named(node: &Node, what: &str) -> String {
    format!("{what} '{}' ({})", node.name, node.op.kind())
}

/// A Reshape that splits the channel axis into sub-axes, merges sub-axes back, or leaves the
/// channel axis as it is, with the batch and the trailing (spatial) axes unchanged.
pub(super) fn reshape(node: &Node, v: &ChannelView, out_dims: &[usize]) -> Result<Rule, String> {
    if v.flat.is_some() {
        return Err(named(node, "a Reshape of flattened channels:"));
    }
    let spatial = &v.dims[v.channel_axes().min(v.dims.len())..];
    let k = out_dims
        .len()
        .checked_sub(spatial.len())
        .filter(|&k| {
            k >= 1
                && out_dims[k..] == *spatial
                && out_dims[..k].iter().product::<usize>() == v.channels
        })
        .ok_or_else(|| named(node, "a Reshape that mixes the channels with other axes:"))?;
    let mut links = vec![Link {
        input: 0,
        output: 0,
        from: 0,
        to: 0,
        len: v.channels,
        stride: 1,
    }];
    let sub = (k > 1).then(|| out_dims[..k].to_vec());
    if let Some(sub) = &sub {
        // Tie offset j of the last sub-axis across every index of the leading ones: input
        // position `lead·last + j` also links to output position `j`.
        let last = sub[k - 1];
        for lead in 1..v.channels / last.max(1) {
            links.push(Link {
                input: 0,
                output: 0,
                from: lead * last,
                to: 0,
                len: last,
                stride: 1,
            });
        }
    }
    Ok(Rule {
        links,
        out_channels: v.channels,
        sub,
        edit: Some(EditKind::ChannelReshape),
        ..Rule::default()
    })
}

/// A Transpose that permutes only the channel sub-axes (the batch and the spatial axes stay).
pub(super) fn transpose(node: &Node, v: &ChannelView, perm: &[usize]) -> Result<Rule, String> {
    let k = v.channel_axes();
    let rank = v.dims.len() + 1;
    let moves_others = perm.len() != rank || perm[0] != 0 || (k + 1..rank).any(|i| perm[i] != i);
    if v.flat.is_some() || moves_others {
        return Err(format!(
            "its channels reach the Transpose '{}' (perm {perm:?}), which moves the batch or \
             spatial axes: only a permutation of channel sub-axes (a channel shuffle) has a \
             channel rule",
            node.name
        ));
    }
    let in_sub = &v.dims[..k];
    let out_sub: Vec<usize> = (1..=k).map(|i| in_sub[perm[i] - 1]).collect();
    // Output position of each input position: decompose over the input sub-axes, permute,
    // flatten over the output sub-axes.
    let mut links: Vec<Link> = Vec::new();
    let mut index = vec![0usize; k];
    for p in 0..v.channels {
        let mut rest = p;
        for a in (0..k).rev() {
            index[a] = rest % in_sub[a];
            rest /= in_sub[a];
        }
        let q = (0..k).fold(0, |q, i| q * out_sub[i] + index[perm[i + 1] - 1]);
        // Runs of input positions whose outputs step evenly share one link.
        match links.last_mut() {
            Some(l) if l.len == 1 && q > l.to => {
                l.stride = q - l.to;
                l.len = 2;
            }
            Some(l) if q == l.to + l.len * l.stride => l.len += 1,
            _ => links.push(Link {
                input: 0,
                output: 0,
                from: p,
                to: q,
                len: 1,
                stride: 1,
            }),
        }
    }
    Ok(Rule {
        links,
        out_channels: v.channels,
        sub: (k > 1).then_some(out_sub),
        ..Rule::default()
    })
}
