//! Test data: the fixtures' images and labels, and `.npy` files written by hand.

use std::ffi::OsString;
use std::path::Path;

use std::sync::OnceLock;

use subprune::exec::run::{F32Images, U8Images};
use subprune::npy;
use subprune::onnx::OnnxModel;
use subprune::prune::layerwise::{layerwise_stats, LayerwiseStats};
use subprune::prune::select::greedy::Greedy;
use subprune::prune::{cpu_engines, PruneOptions};
use subprune::rng::Rng;
use subprune::{CpuBackend, Tensor};

use super::{first_images, fixture};

/// The arguments of `subprune eval MODEL --data DATA --labels LABELS`, then `extra`.
pub fn eval_args(model: &Path, data: &Path, labels: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["eval".into(), model.into()];
    args.extend([
        "--data".into(),
        data.into(),
        "--labels".into(),
        labels.into(),
    ]);
    args.extend(extra.iter().map(OsString::from));
    args
}

/// The first `n` calibration images of the MNIST fixture (preprocessed float32).
pub fn mnist_calib(n: usize) -> F32Images {
    F32Images::new("calib", first_images("mnist_calib_512.npy", n)).unwrap()
}

/// `n` MNIST test images (uint8, normalised with MNIST's mean and std) and their labels: the
/// first `n`, or the last `n` with `last`.
pub fn mnist_test_images(n: usize, last: bool) -> (U8Images, Vec<i64>) {
    let (shape, data) = match npy::read_any(fixture("mnist_test_u8.npy")).unwrap() {
        npy::NpyArray::U8 { shape, data } => (shape, data),
        _ => panic!("the MNIST test set is uint8"),
    };
    let per: usize = shape[1..].iter().product();
    let first = if last { shape[0] - n } else { 0 };
    let mut s = shape.clone();
    s[0] = n;
    let images = U8Images::new(
        s,
        data[first * per..(first + n) * per].to_vec(),
        &[0.1307],
        &[0.3081],
    )
    .unwrap();
    let labels =
        npy::read_i64(fixture("mnist_test_labels.npy")).unwrap().1[first..first + n].to_vec();
    (images, labels)
}

/// A version-1.0 `.npy` file of `dtype` (e.g. `|u1`, `<i8`) and `shape` holding `data`, written
/// here by hand (the library writes only float32).
pub fn npy_bytes(dtype: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let dims = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    npy_by_hand(dtype, &format!("({dims})"), data)
}

/// A version-1.0 `.npy` file written by hand: `descr` and `shape` as Python literals (any text, so
/// that tests can write malformed or absurd shapes), then the raw payload.
pub fn npy_by_hand(descr: &str, shape: &str, payload: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A `.npy` file of int64 values (labels).
pub fn i64_npy(values: &[i64]) -> Vec<u8> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy_bytes("<i8", &[values.len()], &bytes)
}

/// The MNIST CNN fixture.
pub fn mnist_model() -> OnnxModel {
    subprune::onnx::load(fixture("mnist_cnn.onnx")).unwrap()
}

/// Layer-wise statistics of the MNIST CNN on 64 calibration images (computed once per test
/// binary).
pub fn mnist_layerwise() -> &'static (OnnxModel, LayerwiseStats) {
    static S: OnceLock<(OnnxModel, LayerwiseStats)> = OnceLock::new();
    S.get_or_init(|| {
        let m = mnist_model();
        let (backend, factory) = cpu_engines();
        let ls = layerwise_stats(
            &m.graph,
            &mnist_calib(64),
            &PruneOptions::default(),
            &backend,
            &factory,
            &mut |_, _| {},
        )
        .unwrap();
        (m, ls)
    })
}

/// The greedy error curves of [`mnist_layerwise`]'s layers (computed once per test binary).
pub fn mnist_greedy_curves() -> &'static Vec<Vec<f64>> {
    static C: OnceLock<Vec<Vec<f64>>> = OnceLock::new();
    C.get_or_init(|| {
        let (_, ls) = mnist_layerwise();
        ls.greedy_curves(&CpuBackend::new(), 1e-7, &Greedy::default())
            .unwrap()
    })
}

/// A tensor of `shape` with standard normal entries from `rng`.
pub fn random(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape.to_vec(), rng.normal_vec(n)).unwrap()
}

/// Rectified random data with channel-dependent scales, like real activations (`shape` is
/// `(n, C[, H, W])`).
pub fn activations(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let mut t = random(rng, shape);
    let per_image: usize = shape[1..].iter().product();
    let plane: usize = shape[2..].iter().product();
    for (i, v) in t.data.iter_mut().enumerate() {
        let c = (i % per_image) / plane.max(1);
        *v = (*v + 0.3).max(0.0) * (1.0 + 0.1 * (c % 7) as f32);
    }
    t
}
