//! The built-in demo layer: a synthetic conv consumer whose input channels are correlated the way
//! real feature maps are (a few latent maps mixed, rectified, plus noise), generated from a fixed
//! seed so that no data has to be downloaded or shipped.

use crate::layer::ConvOptions;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Images in the demo batch.
pub const IMAGES: usize = 64;
/// Channels of the pruned layer.
pub const CHANNELS: usize = 64;
/// Latent maps the channels are mixed from.
pub const LATENT: usize = 24;
/// Spatial size of the feature maps.
pub const SIZE: usize = 8;
/// Consumer output channels.
pub const OUTPUTS: usize = 32;
/// The consumer is a 3×3 conv, stride 1, padding 1.
pub const CONV: ConvOptions = ConvOptions {
    stride: [1, 1],
    padding: [1, 1],
    dilation: [1, 1],
};

/// The demo consumer input `(IMAGES, CHANNELS, SIZE, SIZE)` and weight `(OUTPUTS, CHANNELS, 3, 3)`.
pub fn layer() -> (Tensor, Tensor) {
    let mut rng = Rng::new(2022);
    let hw = SIZE * SIZE;
    let latent = rng.normal_vec(IMAGES * LATENT * hw);
    let mixing = rng.normal_vec(CHANNELS * LATENT);
    let mut data = vec![0.0f32; IMAGES * CHANNELS * hw];
    for n in 0..IMAGES {
        for c in 0..CHANNELS {
            for p in 0..hw {
                let mut v = 0.3 * rng.normal() as f32;
                for l in 0..LATENT {
                    v += mixing[c * LATENT + l] * latent[(n * LATENT + l) * hw + p];
                }
                data[(n * CHANNELS + c) * hw + p] = v.max(0.0);
            }
        }
    }
    let weight = rng.normal_vec(OUTPUTS * CHANNELS * 9);
    (
        Tensor {
            shape: vec![IMAGES, CHANNELS, SIZE, SIZE],
            data,
        },
        Tensor {
            shape: vec![OUTPUTS, CHANNELS, 3, 3],
            data: weight,
        },
    )
}
