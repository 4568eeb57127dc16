//! Test support shared by the integration tests: the fixtures, temporary folders, the one GPU
//! backend of a test binary, running the `subprune` binary, an independent f64 oracle for the
//! layer problem (`oracle`), test data (`data`) and the table of small ONNX models of every op
//! (`ops`, built with the library's `subprune::synthetic::Builder`).
//!
//! tract-onnx, the reference runtime, is in `tract.rs`, included only by the files that use it
//! (`#[path = "common/tract.rs"] mod tract;`) so that the others do not link it.

#![allow(dead_code)]

mod cli;
mod data;
pub mod files;
pub mod ops;
mod oracle;
pub mod python;

#[allow(unused_imports)]
pub use cli::*;
#[allow(unused_imports)]
pub use data::*;
#[allow(unused_imports)]
pub use oracle::*;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use subprune::exec::Executor;
use subprune::{npy, GpuBackend, Tensor, TensorView};

/// A file of the test fixtures (`tests/fixtures`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture models with their calibration data (already preprocessed float32).
pub const MODELS: [(&str, &str); 4] = [
    ("mnist_cnn.onnx", "mnist_calib_512.npy"),
    ("resnet56_cifar10.onnx", "cifar10_calib_512.npy"),
    ("vgg11_bn_fashion.onnx", "fashion_calib_512.npy"),
    ("mobilenetv2_fashion.onnx", "fashion_calib_512.npy"),
];

/// Images `first..first + n` of a fixture's float32 images file.
pub fn images(file: &str, first: usize, n: usize) -> Tensor {
    let t = npy::read_f32(fixture(file)).unwrap();
    let per: usize = t.shape[1..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] = n;
    Tensor::new(shape, t.data[first * per..(first + n) * per].to_vec()).unwrap()
}

/// The first `n` images of a fixture's float32 images file.
pub fn first_images(file: &str, n: usize) -> Tensor {
    images(file, 0, n)
}

/// Largest |a − b| relative to the largest |b|.
pub fn relative_gap(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let gap = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    gap / scale
}

/// The first output of `exec` on `images`, `batch` images at a time.
pub fn run_in_batches(exec: &dyn Executor, images: &Tensor, batch: usize) -> Vec<f32> {
    let per: usize = images.shape[1..].iter().product();
    let mut out = Vec::new();
    for chunk in images.data.chunks(batch * per) {
        let mut shape = images.shape.clone();
        shape[0] = chunk.len() / per;
        let o = exec
            .run_batch(TensorView::new(&shape, chunk).unwrap(), &[], &mut |_, _| {
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", exec.name()));
        out.extend_from_slice(&o[0].data);
    }
    out
}

/// The one GPU backend of a test binary (pipelines are compiled once). Without an adapter the
/// GPU tests fail rather than skip: CI runs them on lavapipe (Mesa's software Vulkan).
pub fn gpu() -> &'static GpuBackend {
    static GPU: OnceLock<GpuBackend> = OnceLock::new();
    GPU.get_or_init(|| {
        GpuBackend::new(None).unwrap_or_else(|e| {
            panic!(
                "no wgpu adapter for the GPU tests: {e}\n\
                 (without a GPU, install Mesa's software Vulkan driver: apt-get install mesa-vulkan-drivers)"
            )
        })
    })
}

/// A unique, empty temporary directory for one test, removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A unique, empty temporary directory under `std::env::temp_dir()`.
pub fn temp_dir(tag: &str) -> TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "subprune-test-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Asserts that `got` is within `tol` of `want`'s largest entry, entry by entry (`what` names
/// the quantity in the failure).
pub fn assert_close_scaled(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-30);
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= tol * scale,
        "{what}: worst |got − want| = {worst:e} > {tol:e} · {scale:e}"
    );
}
