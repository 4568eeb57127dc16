//! The one check of output paths that every command that writes runs before any work
//! ([`subprune::validate::check_outputs`]): every output against every input (the model, its
//! external data files, every `.npy`) and against the other outputs, by file identity.

use std::path::{Path, PathBuf};

/// Checks `outputs` against `inputs` and each other (`(option, path)` pairs; absent options are
/// `None`). With `model` (once it is loaded), its external data files count as inputs; with the
/// path it will be written to, the data file written beside it ([`data_file_of`]) counts as an
/// output when the model has external data.
pub fn check(
    outputs: &[(&str, Option<&Path>)],
    inputs: &[(&str, Option<&Path>)],
    model: Option<(&subprune::onnx::OnnxModel, Option<&Path>)>,
) -> anyhow::Result<()> {
    let mut ins: Vec<(&str, &Path)> = present(inputs);
    let mut outs: Vec<(&str, &Path)> = present(outputs);
    let data_file;
    if let Some((m, written_to)) = model {
        ins.extend(
            m.sources()
                .iter()
                .skip(1)
                .map(|p| ("model's external data file", p.as_path())),
        );
        if let (true, Some(out)) = (m.sources().len() > 1, written_to) {
            data_file = data_file_of(out);
            outs.push(("external data file of the output", data_file.as_path()));
        }
    }
    Ok(subprune::validate::check_outputs(&outs, &ins)?)
}

fn present<'a>(list: &[(&'a str, Option<&'a Path>)]) -> Vec<(&'a str, &'a Path)> {
    list.iter()
        .filter_map(|&(name, p)| Some((name, p?)))
        .collect()
}

/// The external data file `prune` writes beside a model written to `out`: `NAME.data`.
pub fn data_file_of(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "model.onnx".into());
    out.with_file_name(format!("{name}.data"))
}
