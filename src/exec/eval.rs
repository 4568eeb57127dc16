//! Classifier accuracy: top-1 and top-5 of the first graph output's logits against labels.

use std::time::Instant;

use super::run::{forward_batches, ImageSource};
use super::Executor;
use crate::error::{Error, Result};

/// The result of [`evaluate`]: the counts `correct_top1`, `correct_top5` and the accuracies
/// ([`EvalReport::top1_accuracy`]). In JSON (`eval --json`, the prune report) `top1` and `top5`
/// are the accuracies (fractions of the images), with the counts under the same names as here:
/// users read `top1` as an accuracy.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(into = "EvalJson")]
pub struct EvalReport {
    /// Images scored.
    pub images: usize,
    /// The number of images whose label has the largest logit (ties to the lowest class index).
    pub correct_top1: usize,
    /// The number of images whose label is among the five largest logits.
    pub correct_top5: usize,
    /// Images per second of the whole run (data preparation included).
    pub images_per_second: f64,
    /// The executor that ran it.
    pub backend: String,
}

impl EvalReport {
    /// Top-1 accuracy: the fraction of the images whose label has the largest logit.
    pub fn top1_accuracy(&self) -> f64 {
        self.correct_top1 as f64 / self.images.max(1) as f64
    }

    /// Top-5 accuracy: the fraction of the images whose label is among the five largest logits.
    pub fn top5_accuracy(&self) -> f64 {
        self.correct_top5 as f64 / self.images.max(1) as f64
    }
}

/// The JSON form of an [`EvalReport`].
#[derive(serde::Serialize)]
struct EvalJson {
    images: usize,
    top1: f64,
    top5: f64,
    correct_top1: usize,
    correct_top5: usize,
    images_per_second: f64,
    backend: String,
}

impl From<EvalReport> for EvalJson {
    fn from(r: EvalReport) -> Self {
        Self {
            images: r.images,
            top1: r.top1_accuracy(),
            top5: r.top5_accuracy(),
            correct_top1: r.correct_top1,
            correct_top5: r.correct_top5,
            images_per_second: r.images_per_second,
            backend: r.backend,
        }
    }
}

/// The rank of `label` among `logits` (0 = the largest; ties broken towards lower indices, as
/// NumPy's `argmax` does), or an error for a NaN logit.
pub fn label_rank(logits: &[f32], label: usize) -> Option<usize> {
    let v = logits[label];
    if v.is_nan() {
        return None;
    }
    Some(
        logits
            .iter()
            .enumerate()
            .filter(|&(i, &x)| x > v || (x == v && i < label))
            .count(),
    )
}

/// Runs `source` through `exec` and scores the first output (`(N, classes)` logits) against
/// `labels` (one per image, in `0..classes`).
pub fn evaluate(
    exec: &dyn Executor,
    source: &dyn ImageSource,
    labels: &[i64],
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport> {
    if labels.len() != source.len() {
        return Err(Error::Shape(format!(
            "{} labels for {} images; they must match",
            labels.len(),
            source.len()
        )));
    }
    if source.is_empty() {
        return Err(Error::InvalidArgument("no images to evaluate".into()));
    }
    let start = Instant::now();
    let (mut top1, mut top5) = (0usize, 0usize);
    forward_batches(
        exec,
        source,
        batch,
        &[],
        &mut |_, _| Ok(()),
        &mut |first, outputs| {
            let logits = outputs
                .first()
                .ok_or_else(|| Error::InvalidArgument("the model has no output".into()))?;
            // (N, classes), or (N, classes, 1, …, 1) as a conv head leaves it: squeezed.
            let classes = match logits.shape.as_slice() {
                [_, c, rest @ ..] if rest.iter().all(|&d| d == 1) => *c,
                other => {
                    return Err(Error::Shape(format!(
                        "the model's output is {other:?}; (N, classes) logits are expected \
                         (or (N, classes, 1, 1))"
                    )))
                }
            };
            for (i, row) in logits.data.chunks_exact(classes.max(1)).enumerate() {
                let label = labels[first + i];
                if label < 0 || label as usize >= classes {
                    return Err(Error::InvalidArgument(format!(
                        "label {label} of image {} is outside the model's {classes} classes",
                        first + i
                    )));
                }
                let rank = label_rank(row, label as usize).ok_or_else(|| Error::NonFinite {
                    tensor: "logits".into(),
                    index: (first + i) * classes + label as usize,
                    value: f32::NAN,
                })?;
                top1 += (rank == 0) as usize;
                top5 += (rank < 5) as usize;
            }
            Ok(())
        },
        progress,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(EvalReport {
        images: source.len(),
        correct_top1: top1,
        correct_top5: top5,
        images_per_second: source.len() as f64 / seconds.max(1e-9),
        backend: exec.name(),
    })
}
