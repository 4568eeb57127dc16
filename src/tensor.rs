//! Dense row-major f32 tensors, the currency between files, the engine and the backends.

use crate::error::{Error, Result};

/// The number of values of a tensor of `shape`, or an error when the product overflows.
pub fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Shape(format!("shape {shape:?} is too large for this machine")))
}

/// An owned row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// Builds a tensor, checking that `data` has as many values as `shape` asks for.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let expected = element_count(&shape)?;
        if expected != data.len() {
            return Err(Error::Shape(format!(
                "tensor of shape {shape:?} needs {expected} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    /// Borrows the tensor as a view.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            shape: &self.shape,
            data: &self.data,
        }
    }
}

/// A borrowed row-major f32 tensor.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// Dimensions, outermost first.
    pub shape: &'a [usize],
    /// Row-major values.
    pub data: &'a [f32],
}

impl<'a> TensorView<'a> {
    /// Builds a view, checking the value count.
    pub fn new(shape: &'a [usize], data: &'a [f32]) -> Result<Self> {
        let expected = element_count(shape)?;
        if expected != data.len() {
            return Err(Error::Shape(format!(
                "view of shape {shape:?} needs {expected} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    /// Fails with [`Error::NonFinite`] naming `name` if any value is NaN or infinite.
    pub fn check_finite(&self, name: &str) -> Result<()> {
        match crate::validate::first_non_finite(self.data) {
            None => Ok(()),
            Some(index) => Err(Error::NonFinite {
                tensor: name.to_string(),
                index,
                value: self.data[index],
            }),
        }
    }
}
