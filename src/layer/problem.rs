//! One layer to prune: the consumer's unfolding and its weight as a `D × m` matrix.

use super::unfolding::{ChannelLayout, Consumer, ConvGeometry, Unfolding};
use crate::error::{Error, Result};
use crate::tensor::TensorView;

/// One layer to prune: the consumer's unfolding and its weight as a `D × m` matrix.
#[derive(Clone, Debug)]
pub struct LayerProblem {
    /// How the consumer's input is unfolded.
    pub unfolding: Unfolding,
    /// Consumer output channels `m`.
    pub outputs: usize,
    /// The consumer weight reshaped to `D × m` (row-major, f64): `B·weight` is the consumer's
    /// pre-activation output without bias.
    pub weight: Vec<f64>,
    /// The weight's original shape, used to write the pruned weight back in the same layout.
    pub weight_shape: Vec<usize>,
    /// Blocks of a grouped conv read as a dense one: `weight` is block-diagonal (input block
    /// `b` of `D/groups` columns feeds output block `b` of `m/groups` outputs), and the
    /// statistics keep only the diagonal blocks ([`super::LayerStats::from_raw`]); 1 for a
    /// dense consumer.
    pub groups: usize,
}

impl LayerProblem {
    /// Builds the problem from the consumer input's shape `(N, C)` or `(N, C, H, W)` and the
    /// consumer weight: `(M, C)` (Linear), `(M, C, kh, kw)` (Conv, with `conv` giving stride,
    /// padding and dilation) or `(M, C·H·W)` with a 4-D input (Conv → Flatten → Linear).
    pub fn new(
        input_shape: &[usize],
        weight: TensorView<'_>,
        conv: Option<ConvOptions>,
    ) -> Result<Self> {
        weight.check_finite("weight")?;
        let ws = weight.shape;
        let per_image = input_shape.get(1..).unwrap_or(&[]);
        let consumer = match (per_image.len(), ws.len()) {
            (1, 2) => Consumer::Linear,
            (3, 4) => {
                let o = conv.unwrap_or_default();
                Consumer::Conv(ConvGeometry {
                    kernel: [ws[2], ws[3]],
                    stride: o.stride,
                    padding: o.padding,
                    dilation: o.dilation,
                })
            }
            (3, 2) => Consumer::FlattenLinear,
            _ => {
                return Err(Error::Shape(format!(
                    "inputs of shape {input_shape:?} and weight of shape {ws:?} do not form a Linear \
                     ((N, C) with (M, C)), Conv ((N, C, H, W) with (M, C, kh, kw)) or Flatten→Linear \
                     ((N, C, H, W) with (M, C·H·W)) consumer"
                )))
            }
        };
        if conv.is_some() && !matches!(consumer, Consumer::Conv(_)) {
            let o = conv.unwrap_or_default();
            if o != ConvOptions::default() {
                return Err(Error::InvalidArgument(
                    "stride, padding and dilation only apply to a Conv consumer (4-D weight)"
                        .into(),
                ));
            }
        }
        let unfolding = Unfolding::new(consumer, per_image)?;
        let layout = unfolding.layout();
        let d = layout.columns();
        let outputs = ws[0];
        // The weight is a valid tensor, so these products fit; D × m must fit for W (D × m).
        let weight_columns: usize = ws[1..].iter().product();
        if d.checked_mul(outputs)
            .and_then(|v| v.checked_mul(8))
            .is_none()
        {
            return Err(Error::InvalidArgument(format!(
                "weight of shape {ws:?} with {d} input columns is too large"
            )));
        }
        if weight_columns != d
            || (matches!(consumer, Consumer::Conv(_)) && ws[1] != layout.channels)
        {
            return Err(Error::Shape(format!(
                "weight of shape {ws:?} does not match inputs of shape {input_shape:?}: the consumer \
                 reads {} channels × {} columns = {d} input columns, the weight has {weight_columns}",
                layout.channels, layout.columns_per_channel
            )));
        }
        if outputs == 0 {
            return Err(Error::Shape(format!(
                "weight of shape {ws:?} has no outputs"
            )));
        }
        // (M, D) row-major → (D, M).
        let mut wmat = vec![0.0; d * outputs];
        for o in 0..outputs {
            for col in 0..d {
                wmat[col * outputs + o] = weight.data[o * d + col] as f64;
            }
        }
        Ok(Self {
            unfolding,
            outputs,
            weight: wmat,
            weight_shape: ws.to_vec(),
            groups: 1,
        })
    }

    /// The channel layout of the unfolded input.
    pub fn layout(&self) -> ChannelLayout {
        self.unfolding.layout()
    }

    /// Turns the rows of a `D_S × m` matrix (the kept channels' column groups, in `kept` order)
    /// back into a consumer weight of the original layout with only the kept input channels.
    pub fn weight_tensor(&self, kept: &[usize], rows: &[f64]) -> crate::tensor::Tensor {
        let ks = self.layout().columns_per_channel;
        let m = self.outputs;
        let cols = kept.len() * ks;
        let mut data = vec![0.0f32; m * cols];
        for o in 0..m {
            for col in 0..cols {
                data[o * cols + col] = rows[col * m + o] as f32;
            }
        }
        let mut shape = self.weight_shape.clone();
        match self.unfolding.consumer {
            Consumer::Conv(_) | Consumer::Linear => shape[1] = kept.len(),
            Consumer::FlattenLinear => shape[1] = cols,
        }
        crate::tensor::Tensor { shape, data }
    }
}

/// Stride, padding and dilation of a Conv consumer (the kernel size comes from its weight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding along height and width.
    pub padding: [usize; 2],
    /// Dilation along height and width.
    pub dilation: [usize; 2],
}

impl Default for ConvOptions {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        }
    }
}
