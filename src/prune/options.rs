//! What a prune is asked to do: the variant, the selection method, the sizes (a keep fraction,
//! per-layer counts, or a whole-model [`ModelBudget`]), the reweighting and the resources. The
//! checks that need no model live here ([`PruneOptions::check`], [`Target::check`]); the ones
//! against the model in `jobs.rs`.

use std::sync::Arc;

use super::budget::{Allocation, Target};
use super::select;
use super::sensitivity::Validation;
use crate::error::{Error, Result};
use crate::exec::run::ImageSource;
use crate::layer::greedy::check_dependence_tol;
use crate::layer::reweight::check_ridge;
use crate::layer::select::check_batch_images;
use crate::layer::Budget;

/// Default relative ridge `λ / mean diag G[S,S]` of the reweighting (chosen by measurement on the
/// fixtures; see `EVALUATION.md`).
pub const DEFAULT_RIDGE: f64 = 1e-2;

/// Default memory for cached activations of the sequential variants (2 GiB).
pub const DEFAULT_MEMORY_BUDGET: u64 = 2 << 30;

/// Which activations each layer's statistics use (`docs/ALGORITHM.md` §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// LayerInChange: the original network's activations for every layer.
    Layer,
    /// SeqInChange: the network pruned up to the layer, `A = B`.
    Seq,
    /// AsymInChange: `B` from the pruned network, `A` from the original.
    #[default]
    Asym,
}

impl std::fmt::Display for Variant {
    /// The name `--variant` takes: `layer`, `seq` or `asym`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::Layer => "layer",
            Variant::Seq => "seq",
            Variant::Asym => "asym",
        })
    }
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "layer" => Ok(Variant::Layer),
            "seq" => Ok(Variant::Seq),
            "asym" => Ok(Variant::Asym),
            other => Err(Error::InvalidArgument(format!(
                "variant '{other}': expected layer, seq or asym"
            ))),
        }
    }
}

impl Target {
    /// Checks the target before any work: a compression ratio > 1, a positive FLOP count.
    pub fn check(self) -> Result<()> {
        match self {
            Target::Compression(r) if !(r > 1.0 && r.is_finite()) => Err(Error::InvalidArgument(
                format!("--compression {r}: must be a ratio > 1"),
            )),
            Target::Flops(f) if !(f > 0.0 && f.is_finite()) => Err(Error::InvalidArgument(
                format!("--target-flops {f}: must be a positive number"),
            )),
            _ => Ok(()),
        }
    }
}

/// Labelled validation images held by the options (see [`Validation`]).
#[derive(Clone)]
pub struct ValidationSet {
    /// The images, preprocessed like the calibration images.
    pub images: Arc<dyn ImageSource>,
    /// One class index per image.
    pub labels: Arc<[i64]>,
}

impl ValidationSet {
    /// The set as the sensitivity measurement reads it.
    pub fn as_validation(&self) -> Validation<'_> {
        Validation {
            images: self.images.as_ref(),
            labels: &self.labels,
        }
    }
}

impl std::fmt::Debug for ValidationSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidationSet")
            .field("images", &self.images.len())
            .field("labels", &self.labels.len())
            .finish()
    }
}

/// A whole-model target split over the pruned layers ([`super::budget`]); [`super::prune_with`]
/// plans it and prunes to the sizes found (they replace [`PruneOptions::keep_fraction`] and
/// [`PruneOptions::keep`]).
#[derive(Clone, Debug)]
pub struct ModelBudget {
    /// What the whole model must meet.
    pub target: Target,
    /// How the target is split over layers.
    pub allocation: Allocation,
    /// Labelled validation images ([`Allocation::Accuracy`] only).
    pub validation: Option<ValidationSet>,
}

/// Options of [`super::prune`].
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Which activations the statistics use.
    pub variant: Variant,
    /// How each layer's channels are chosen ([`select`]).
    pub method: select::Method,
    /// Seed of the random methods.
    pub seed: u64,
    /// Replace the consumers' weights by the reweighted `W~` (else keep their original rows).
    pub reweight: bool,
    /// Fraction of channels kept in every prunable layer without a [`PruneOptions::keep`] entry.
    pub keep_fraction: f64,
    /// Channels kept per layer, by producer node name (overrides the fraction).
    pub keep: Vec<(String, usize)>,
    /// A whole-model target; when given, its sizes replace `keep_fraction` and `keep`.
    pub budget: Option<ModelBudget>,
    /// Prunable layers left whole, by producer node name.
    pub skip: Vec<String>,
    /// Relative ridge of the reweighting (`λ = ridge · mean diag G[S,S]`).
    pub ridge: f64,
    /// Relative pivot tolerance for numerically dependent channels.
    pub dependence_tol: f64,
    /// Images per forward batch.
    pub batch_images: usize,
    /// Bytes of cached activations the sequential variants may hold: on the host, or on the GPU
    /// executor's device (the cut points' activations, and the calibration images kept there
    /// across layers).
    pub memory_budget: u64,
    /// Bytes the statistics and greedy state may take at the peak ([`super::memory`]); `None`:
    /// the memory available to the process.
    pub memory_limit: Option<u64>,
    /// Keep the consumer inputs (and targets) that one layer's statistics used, by producer name,
    /// in [`super::Pruned::recorded`] (for checks; holds all calibration activations of that
    /// layer).
    pub record: Option<String>,
    /// Which channel groups are pruned: every prunable group (the default), or block-internal
    /// ones only (residual streams and Concat/Split blocks left whole, as before channel groups).
    pub groups: crate::analysis::GroupScope,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            variant: Variant::Asym,
            method: select::Method::Greedy,
            seed: 0,
            reweight: true,
            keep_fraction: 0.5,
            keep: Vec::new(),
            budget: None,
            skip: Vec::new(),
            ridge: DEFAULT_RIDGE,
            dependence_tol: crate::DEFAULT_DEPENDENCE_TOL,
            batch_images: crate::DEFAULT_BATCH_IMAGES,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            memory_limit: None,
            record: None,
            groups: crate::analysis::GroupScope::All,
        }
    }
}

impl PruneOptions {
    /// Checks the numeric options (keep fraction, ridge, dependence tolerance, batch size)
    /// before any work.
    pub fn check(&self) -> Result<()> {
        Budget::KeepFraction(self.keep_fraction).resolve(1)?;
        check_ridge(self.ridge)?;
        check_dependence_tol(self.dependence_tol)?;
        check_batch_images(self.batch_images)
    }
}
