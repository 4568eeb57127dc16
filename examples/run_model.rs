//! Runs an ONNX model on images with one of subprune's executors and writes its first output:
//! what `tools/exported_models.py` compares with onnxruntime's.
//!
//! ```sh
//! cargo run --example run_model -- MODEL.onnx IMAGES.npy OUT.npy [cpu|gpu] [--batch B]
//! ```
//!
//! `IMAGES.npy` is float32 in the model's input layout (the image count first); the model's
//! dynamic sizes are taken from it, as `subprune eval` takes them from `--data`. The images run
//! `B` at a time (default 4) and the outputs are stacked.

use anyhow::{bail, Context};
use subprune::exec::{CpuExecutor, Executor, GpuExecutor};
use subprune::onnx::LoadOptions;
use subprune::{GpuBackend, Tensor};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut positional, mut batch) = (Vec::new(), 4usize);
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--batch" => batch = rest.next().context("--batch needs a number")?.parse()?,
            _ => positional.push(a.as_str()),
        }
    }
    let (model_path, images_path, out_path, backend) = match positional[..] {
        [m, i, o] => (m, i, o, "cpu"),
        [m, i, o, b] => (m, i, o, b),
        _ => bail!("usage: run_model MODEL.onnx IMAGES.npy OUT.npy [cpu|gpu] [--batch B]"),
    };
    let images = subprune::npy::read_f32(images_path)?;
    let options = LoadOptions {
        data_shape: Some(images.shape.clone()),
        ..Default::default()
    };
    let model = subprune::onnx::load_with(model_path, &options)?;
    let gpu;
    let exec: Box<dyn Executor> = match backend {
        "cpu" => Box::new(CpuExecutor::new(&model.graph)?),
        "gpu" => {
            gpu = GpuBackend::new(None)?;
            Box::new(GpuExecutor::new(&model.graph, &gpu)?)
        }
        other => bail!("backend '{other}': expected cpu or gpu"),
    };
    let count = images.shape[0];
    let per_image: usize = images.shape[1..].iter().product();
    let (mut shape, mut data) = (Vec::new(), Vec::new());
    for start in (0..count).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(count);
        let mut batch_shape = images.shape.clone();
        batch_shape[0] = end - start;
        let chunk = Tensor::new(
            batch_shape,
            images.data[start * per_image..end * per_image].to_vec(),
        )?;
        let out = exec
            .run_batch(chunk.view(), &[], &mut |_, _| Ok(()))?
            .swap_remove(0);
        shape.clone_from(&out.shape);
        data.extend_from_slice(&out.data);
    }
    shape[0] = count;
    let out = Tensor::new(shape, data)?;
    std::fs::write(out_path, subprune::npy::to_bytes(&out))?;
    eprintln!("{model_path}: {} images on {}", count, exec.name());
    Ok(())
}
