//! Forward-pass throughput (images/s) of the CPU executor, the GPU executor and tract-onnx on
//! the fixture networks, 512 calibration images each: `cargo bench --bench forward`.
//!
//! All three run the same images in batches of `SUBPRUNE_BENCH_BATCH` (default 64), the CPU ones
//! on all cores (tract's optimized plan for that batch size is built once, outside the timing);
//! the best of `SUBPRUNE_BENCH_REPS` (default 3) runs is reported. The GPU executor runs on the
//! adapter `SUBPRUNE_ADAPTER` names (else wgpu's high-performance one), one warm-up run first
//! (pipeline compilation, buffer pool); without an adapter its column says so.
//! `SUBPRUNE_BENCH_MODELS=vgg11,mobilenetv2` picks models by name. Not criterion: one run of 512
//! VGG-11 images takes seconds, and criterion's minimum of 10 samples would make this take
//! minutes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use subprune::backend::gpu::GpuBackend;
use subprune::exec::{CpuExecutor, Executor, GpuExecutor};
use subprune::tensor::TensorView;
use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue,
    Tensor as TractTensor,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let batch = env_usize("SUBPRUNE_BENCH_BATCH", 64);
    let reps = env_usize("SUBPRUNE_BENCH_REPS", 3);
    let images = 512;
    println!(
        "forward pass, {images} images, batch {batch}, best of {reps}, {} rayon threads",
        rayon::current_num_threads()
    );
    let gpu = match GpuBackend::new(None) {
        Ok(g) => {
            println!("GPU: {}", g.adapter_name());
            Some(g)
        }
        Err(e) => {
            println!("no GPU executor in this run: {e}");
            None
        }
    };
    let wanted = std::env::var("SUBPRUNE_BENCH_MODELS").unwrap_or_default();
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "model", "cpu img/s", "gpu img/s", "tract img/s", "cpu/tract", "gpu/cpu"
    );
    for (model_file, data) in [
        ("vgg11_bn_fashion.onnx", "fashion_calib_512.npy"),
        ("mobilenetv2_fashion.onnx", "fashion_calib_512.npy"),
        ("resnet56_cifar10.onnx", "cifar10_calib_512.npy"),
    ] {
        let short = model_file.split('_').next().unwrap_or(model_file);
        if !wanted.is_empty() && !wanted.split(',').any(|w| w.trim() == short) {
            continue;
        }
        let path = fixture(model_file);
        let x = subprune::npy::read_f32(fixture(data)).expect("calibration data");
        let per: usize = x.shape[1..].iter().product();
        let model = subprune::onnx::load(&path).expect("model");
        let exec = CpuExecutor::new(&model.graph).expect("executor");
        let run_all = |exec: &dyn Executor| {
            for chunk in x.data[..images * per].chunks(batch * per) {
                let mut shape = x.shape.clone();
                shape[0] = chunk.len() / per;
                let view = TensorView::new(&shape, chunk).expect("view");
                exec.run_batch(view, &[], &mut |_, _| Ok(()))
                    .expect("forward");
            }
        };
        let ours = best_of(reps, || run_all(&exec));
        let on_gpu = gpu.as_ref().map(|g| {
            let exec = GpuExecutor::new(&model.graph, g).expect("GPU executor");
            run_all(&exec);
            best_of(reps, || run_all(&exec))
        });
        let mut shape = x.shape.clone();
        shape[0] = batch;
        let plan = tract_onnx::onnx()
            .model_for_path(&path)
            .expect("tract load")
            .with_input_fact(0, InferenceFact::dt_shape(DatumType::F32, shape.clone()))
            .expect("fact")
            .into_optimized()
            .expect("optimize")
            .into_runnable()
            .expect("plan");
        let tract = best_of(reps, || {
            for chunk in x.data[..images * per].chunks_exact(batch * per) {
                let t = TractTensor::from_shape(&shape, chunk).expect("tensor");
                plan.run(tvec!(t.into_tvalue())).expect("tract run");
            }
        });
        let tract_images = (images / batch) * batch;
        let (a, b) = (images as f64 / ours, tract_images as f64 / tract);
        let (g, ratio) = match on_gpu {
            Some(t) => {
                let g = images as f64 / t;
                (format!("{g:.1}"), format!("{:.2}", g / a))
            }
            None => ("–".into(), "–".into()),
        };
        println!(
            "{model_file:<28} {a:>12.1} {g:>12} {b:>12.1} {:>10.2} {ratio:>10}",
            a / b
        );
    }
}
