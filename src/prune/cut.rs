//! Cut points of a graph: where a forward pass can resume from one cached activation
//! ([`single_live`]), and the part of the graph that computes some values from it
//! ([`subgraph`]). The sequential variants and the sensitivity measurements resume there.

use crate::error::{Error, Result};
use crate::ir::{Graph, ValueId};

/// For each node position `p`, the one activation alive before node `p` when there is
/// exactly one (a point to resume a forward pass from).
pub(crate) fn single_live(graph: &Graph) -> Vec<Option<ValueId>> {
    let n = graph.nodes.len();
    let producers = graph.producers();
    let consumers = graph.consumers();
    let mut spans = Vec::new();
    for (v, value) in graph.values.iter().enumerate() {
        if value.constant.is_some() {
            continue;
        }
        let birth = match producers[v] {
            Some(p) => p + 1,
            None if graph.inputs.contains(&v) => 0,
            None => continue,
        };
        let last = if graph.outputs.contains(&v) {
            n
        } else {
            match consumers[v].last() {
                Some(&c) => c,
                None => continue,
            }
        };
        spans.push((v, birth, last));
    }
    // One sweep over the positions (not spans × positions: quadratic on long chains): the
    // count of live spans and the sum of their ids, which is the id when the count is 1.
    let (mut count, mut ids) = (vec![0i64; n + 2], vec![0i128; n + 2]);
    for &(v, b, l) in spans.iter().filter(|&&(_, b, l)| b <= l) {
        (count[b], count[l + 1]) = (count[b] + 1, count[l + 1] - 1);
        (ids[b], ids[l + 1]) = (ids[b] + v as i128, ids[l + 1] - v as i128);
    }
    let (mut live, mut sum) = (0i64, 0i128);
    (0..=n)
        .map(|p| {
            (live, sum) = (live + count[p], sum + ids[p]);
            (live == 1).then_some(sum as ValueId)
        })
        .collect()
}

/// The part of `graph` that computes `outputs` from `from` (and constants).
pub(crate) fn subgraph(graph: &Graph, from: ValueId, outputs: &[ValueId]) -> Result<Graph> {
    let producers = graph.producers();
    let mut need = vec![false; graph.nodes.len()];
    let mut seen = vec![false; graph.values.len()];
    let mut stack = outputs.to_vec();
    while let Some(v) = stack.pop() {
        if seen[v] || v == from || graph.values[v].constant.is_some() {
            continue;
        }
        seen[v] = true;
        match producers[v] {
            Some(p) => {
                need[p] = true;
                stack.extend(graph.nodes[p].inputs.iter().flatten().copied());
            }
            None => {
                return Err(Error::InvalidArgument(format!(
                    "internal: '{}' is not computed from '{}'",
                    graph.values[v].name, graph.values[from].name
                )))
            }
        }
    }
    let mut g = graph.clone();
    g.nodes = graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| need[*i])
        .map(|(_, n)| n.clone())
        .collect();
    g.inputs = vec![from];
    g.outputs = outputs.to_vec();
    Ok(g)
}
