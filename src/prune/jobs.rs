//! Job resolution: the options' names (`keep`, `skip`, `record`) looked up once against the
//! model's channel analysis, giving the layers to prune with their sizes and the producers left
//! whole.

use std::collections::HashMap;

use super::options::PruneOptions;
use crate::analysis::channels::{ChannelAnalysis, ChannelGroup};
use crate::error::{Error, Result};
use crate::ir::Graph;

/// Producers left whole: `(name, reason)`.
pub(crate) type LeftWhole = Vec<(String, String)>;

/// A layer to prune, resolved against the options.
pub(crate) struct Job<'a> {
    /// The layer.
    pub layer: &'a ChannelGroup,
    /// Channels it keeps.
    pub keep: usize,
    /// `keep` stands for a share of the group's parameters (a keep fraction or a budget's
    /// size), not an explicit count ([`super::select::select_sized`]).
    pub by_weight: bool,
}

/// The layers to prune in node order, each with its size (`keep` entries by producer name,
/// else [`PruneOptions::keep_fraction`]; `from_budget`: the entries are a budget's sizes), and
/// the producers left whole (coupled or skipped).
pub(crate) fn resolve_jobs<'a>(
    graph: &Graph,
    analysis: &'a ChannelAnalysis,
    options: &PruneOptions,
    keep_entries: &[(String, usize)],
    from_budget: bool,
) -> Result<(Vec<Job<'a>>, LeftWhole)> {
    let check_node = |name: &str, what: &str| -> Result<()> {
        if graph.node(name).is_none() {
            return Err(Error::InvalidArgument(format!(
                "{what} '{name}': the model has no node of that name"
            )));
        }
        Ok(())
    };
    let mut keep = HashMap::new();
    for (name, k) in keep_entries {
        check_node(name, "--keep")?;
        let layer = match analysis.prunable(name) {
            Some(l) => l,
            None => {
                let why = match (analysis.group_of(graph, name), analysis.coupled(name)) {
                    (Some(g), _) => format!(
                        "it is a producer of the group '{}'; a group is named by its first producer",
                        g.name
                    ),
                    (None, Some(c)) => format!("it is left whole: {}", c.reason),
                    (None, None) => "it is not a Conv, Gemm or MatMul with a constant weight".into(),
                };
                return Err(Error::InvalidArgument(format!(
                    "--keep '{name}': not a prunable group ({why})"
                )));
            }
        };
        if *k == 0 || *k > layer.channels {
            return Err(Error::InvalidArgument(format!(
                "--keep '{name}={k}': must be between 1 and the group's {} channels",
                layer.channels
            )));
        }
        if keep.insert(name.as_str(), *k).is_some() {
            return Err(Error::InvalidArgument(format!(
                "--keep '{name}' is given twice"
            )));
        }
    }
    for name in &options.skip {
        check_node(name, "--skip")?;
        if keep.contains_key(name.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "'{name}' is both kept with --keep and skipped with --skip"
            )));
        }
    }
    if let Some(r) = &options.record {
        if analysis.prunable(r).is_none() || options.skip.contains(r) {
            return Err(Error::InvalidArgument(format!(
                "record '{r}': not a layer that is pruned"
            )));
        }
    }
    let mut left_whole: LeftWhole = analysis
        .coupled
        .iter()
        .map(|c| (c.name.clone(), c.reason.clone()))
        .collect();
    let mut jobs = Vec::new();
    for layer in &analysis.prunable {
        if options.skip.contains(&layer.name) {
            left_whole.push((layer.name.clone(), "skipped".into()));
            continue;
        }
        let (k, by_weight) = match keep.get(layer.name.as_str()) {
            Some(&k) => (k, from_budget),
            // A stream keeps more of its channels than a block (the uniform budget's rule).
            None => {
                let f = match layer.stream {
                    true => options.keep_fraction.powf(super::budget::STREAM_EXPONENT),
                    false => options.keep_fraction,
                };
                (
                    crate::Budget::KeepFraction(f).resolve(layer.channels)?,
                    true,
                )
            }
        };
        jobs.push(Job {
            layer,
            keep: k,
            by_weight,
        });
    }
    if jobs.is_empty() {
        return Err(Error::InvalidArgument(
            "no layer to prune: the model has no prunable layer, or all are skipped".into(),
        ));
    }
    Ok((jobs, left_whole))
}
