//! Data sets named on the command line (`--calib`, `--data`, `--val`): a `.npy` file, or a
//! folder of JPEG/PNG images ([`subprune::images`]) fitted to the model's input.

use std::path::Path;

use anyhow::{bail, Context};
use subprune::exec::run::{F32Images, ImageSource};
use subprune::images::{ImageFolder, ImageOptions, Labels};
use subprune::ir::{Dim, Graph};

use crate::args::FolderArgs;

/// How images are turned into the model's input: normalisation, and for folders, the resize
/// and crop and the model's input shape.
pub struct Preprocess<'a> {
    /// `--mean`.
    pub mean: Option<Vec<f32>>,
    /// `--std`.
    pub std: Option<Vec<f32>>,
    /// `--resize`, `--crop`.
    pub folder: &'a FolderArgs,
    /// The model (its input shape).
    pub graph: &'a Graph,
}

/// A data set: images and, when known, one label each.
pub struct Loaded {
    pub images: Box<dyn ImageSource>,
    pub labels: Option<Vec<i64>>,
}

/// `(channels, [H, W])` of the model's input, `--crop` overriding the spatial size.
fn model_input(graph: &Graph, crop: Option<[usize; 2]>) -> anyhow::Result<(usize, [usize; 2])> {
    let input = graph
        .inputs
        .first()
        .context("the model has no input to feed images to")?;
    let dims = &graph.values[*input].shape.0;
    let fixed = |d: &Dim| match d {
        Dim::Fixed(n) => Some(*n),
        Dim::Batch => None,
    };
    if dims.len() != 4 {
        bail!(
            "the model's input has {} dimensions; images need (N, C, H, W)",
            dims.len()
        );
    }
    let channels = fixed(&dims[1]).context("the model's input has no fixed channel count")?;
    let size = match (fixed(&dims[2]), fixed(&dims[3]), crop) {
        (Some(h), Some(w), Some(c)) if c != [h, w] => bail!(
            "--crop {},{} does not match the model's input size {h}×{w}",
            c[0],
            c[1]
        ),
        (Some(h), Some(w), _) => [h, w],
        (_, _, Some(c)) => c,
        _ => bail!("the model's input has no fixed height and width: give --crop H,W"),
    };
    Ok((channels, size))
}

/// The images at `path` (a `.npy` file or a folder) with labels: for a `.npy` file from
/// `labels`; for a folder from `labels` (`.npy` or text) or its subfolders. `pick`: keep this
/// many images of a folder, drawn with the seed (a `.npy` file is cut by its caller).
pub fn load(
    path: &Path,
    labels: Option<&Path>,
    prep: &Preprocess<'_>,
    pick: Option<(usize, u64)>,
    note_unused_normalisation: bool,
) -> anyhow::Result<Loaded> {
    if !path.is_dir() {
        return Ok(Loaded {
            images: crate::commands::load_images(
                path,
                prep.mean.clone(),
                prep.std.clone(),
                note_unused_normalisation,
            )?,
            labels: labels.map(subprune::npy::read_labels).transpose()?,
        });
    }
    let (channels, size) = model_input(prep.graph, prep.folder.crop()?)?;
    if prep.mean.is_none() && prep.std.is_none() {
        eprintln!(
            "note: no --mean/--std given: the pixels of {} are only scaled to [0, 1] (x / 255); \
             give the dataset's mean and std if the model was trained on normalised images",
            path.display()
        );
    }
    let source = labels.map_or(Labels::Subfolders, |l| Labels::File(l.to_path_buf()));
    let mut folder = ImageFolder::scan(path, &source)?;
    if let Some((n, seed)) = pick {
        match n {
            0 => bail!("--calib-images must be ≥ 1"),
            n if n > folder.paths.len() => bail!(
                "--calib-images {n}: {} holds only {} images",
                path.display(),
                folder.paths.len()
            ),
            n => folder.pick(n, seed),
        }
    }
    let options = ImageOptions {
        channels,
        size,
        resize: prep.folder.resize,
        mean: prep.mean.clone().unwrap_or(vec![0.0]),
        std: prep.std.clone().unwrap_or(vec![1.0]),
    };
    let set = folder.decode(&options)?;
    Ok(Loaded {
        images: Box::new(F32Images::new(path.display().to_string(), set.images)?),
        labels: set
            .labels
            .map(|l| l.into_iter().map(|v| v as i64).collect()),
    })
}

/// [`load`] for a labelled set (`--data`, `--val`): refuses a set without labels.
pub fn load_labelled(
    path: &Path,
    labels: Option<&Path>,
    prep: &Preprocess<'_>,
    note_unused_normalisation: bool,
) -> anyhow::Result<(Box<dyn ImageSource>, Vec<i64>)> {
    let loaded = load(path, labels, prep, None, note_unused_normalisation)?;
    match loaded.labels {
        Some(l) => Ok((loaded.images, l)),
        None if path.is_dir() => bail!(
            "{}: no labels: put the images in one subfolder per class, or give a labels file",
            path.display()
        ),
        None => bail!("{}: give its labels (.npy int64)", path.display()),
    }
}
