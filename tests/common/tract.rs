//! tract-onnx, the independent ONNX runtime the forward passes are checked against.
//!
//! Included with `#[path = "common/tract.rs"] mod tract;` by the files that use it (so that the
//! tests of other files do not link tract).

#![allow(dead_code)]

use std::path::Path;

use subprune::tensor::Tensor;
use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue,
    Tensor as TractTensor,
};

/// tract's first output (shape and values) for `images` on the model at `path`.
pub fn tract_output(path: &Path, images: &Tensor) -> (Vec<usize>, Vec<f32>) {
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .with_input_fact(
            0,
            InferenceFact::dt_shape(DatumType::F32, images.shape.clone()),
        )
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = TractTensor::from_shape(&images.shape, &images.data).unwrap();
    let out = model.run(tvec!(input.into_tvalue())).unwrap();
    let view = out[0].to_plain_array_view::<f32>().unwrap();
    (view.shape().to_vec(), view.iter().copied().collect())
}

/// tract's logits for `images` on the model at `path`.
pub fn tract_logits(path: &Path, images: &Tensor) -> Vec<f32> {
    tract_output(path, images).1
}
