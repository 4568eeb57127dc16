//! How a consumer reads the pruned layer's channels (`docs/ALGORITHM.md` §1): the conv geometry,
//! the channel layout of the unfolded input `B` (rows = images × output positions, `ks` columns
//! per channel) and the im2col map that unfolds a batch of images into those rows and columns.

use crate::error::{Error, Result};
use crate::tensor::TensorView;

/// Kernel geometry of a convolutional consumer (2-D, no groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width (≥ 1).
    pub stride: [usize; 2],
    /// Zero padding on each side along height and width.
    pub padding: [usize; 2],
    /// Dilation along height and width (≥ 1).
    pub dilation: [usize; 2],
}

impl ConvGeometry {
    /// Output height and width for an input of `h × w`, or an error naming the geometry.
    ///
    /// Padding must be smaller than the dilated kernel along its axis: more padding only adds
    /// output positions whose window lies wholly in the zero border (all-zero rows that change
    /// nothing but the running time).
    pub fn output_size(&self, h: usize, w: usize) -> Result<[usize; 2]> {
        const AXES: [&str; 2] = ["height", "width"];
        let mut out = [0; 2];
        for (axis, size) in [h, w].into_iter().enumerate() {
            let name = AXES[axis];
            for (what, value) in [
                ("kernel", self.kernel[axis]),
                ("stride", self.stride[axis]),
                ("dilation", self.dilation[axis]),
            ] {
                if value == 0 {
                    return Err(Error::InvalidArgument(format!(
                        "{what} must be ≥ 1 (it is 0 along the {name})"
                    )));
                }
            }
            // Checked: absurd command-line geometry must be an error, not an overflow.
            let span = self.dilation[axis]
                .checked_mul(self.kernel[axis] - 1)
                .and_then(|s| s.checked_add(1))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "dilation {} with a kernel of {} along the {name} is too large",
                        self.dilation[axis], self.kernel[axis]
                    ))
                })?;
            if self.padding[axis] >= span {
                return Err(Error::InvalidArgument(format!(
                    "padding {} along the {name} is too large: it must be smaller than the \
                     dilated kernel ({span}); more padding only adds all-zero rows",
                    self.padding[axis]
                )));
            }
            // padding < span, so this cannot overflow unless the input itself is near usize::MAX.
            let padded = self.padding[axis]
                .checked_mul(2)
                .and_then(|p| p.checked_add(size))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "padding {} along the {name} is too large",
                        self.padding[axis]
                    ))
                })?;
            if padded < span {
                return Err(Error::Shape(format!(
                    "input {h}x{w} with padding {:?} is smaller than the dilated kernel ({span} along the {name})",
                    self.padding
                )));
            }
            out[axis] = (padded - span) / self.stride[axis] + 1;
        }
        Ok(out)
    }
}

/// How the consumer layer reads the pruned layer's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumer {
    /// A Linear (Gemm) consumer on `(N, C)` inputs: channel `c` is column `c` (`ks = 1`).
    Linear,
    /// A Conv consumer on `(N, C, H, W)` inputs, unfolded like im2col: one row per (image, output
    /// position), channel `c` owns columns `c·ks .. c·ks + ks` with `ks = kh·kw`.
    Conv(ConvGeometry),
    /// Conv → Flatten → Linear on `(N, C, H, W)` inputs: channel `c` owns its `H·W` flattened
    /// positions (`ks = H·W`), in PyTorch's row-major flatten order.
    FlattenLinear,
}

/// Channels and the size of each channel's column group: `D = channels · columns_per_channel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelLayout {
    /// Number of channels `d` of the pruned layer (= input channels of the consumer).
    pub channels: usize,
    /// Columns per channel `ks` (not to be confused with a convolution's `group`).
    pub columns_per_channel: usize,
}

impl ChannelLayout {
    /// Total columns `D`.
    pub fn columns(&self) -> usize {
        self.channels * self.columns_per_channel
    }
}

/// The unfolding of one consumer input: per-image geometry and the im2col map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unfolding {
    /// The consumer kind.
    pub consumer: Consumer,
    /// Input channels `C`.
    pub channels: usize,
    /// Input height (1 for a Linear consumer).
    pub height: usize,
    /// Input width (1 for a Linear consumer).
    pub width: usize,
    /// Output positions per image, `[oh, ow]` (`[1, 1]` unless Conv).
    pub out_size: [usize; 2],
}

impl Unfolding {
    /// Checks a consumer against a per-image input shape `[C]` or `[C, H, W]`.
    pub fn new(consumer: Consumer, per_image: &[usize]) -> Result<Self> {
        let (channels, height, width) = match (consumer, per_image) {
            (Consumer::Linear, [c]) => (*c, 1, 1),
            (Consumer::Conv(_) | Consumer::FlattenLinear, [c, h, w]) => (*c, *h, *w),
            (Consumer::Linear, s) => {
                return Err(Error::Shape(format!(
                    "a Linear consumer takes inputs (N, C); got per-image shape {s:?}"
                )))
            }
            (_, s) => {
                return Err(Error::Shape(format!(
                    "a Conv or Flatten→Linear consumer takes inputs (N, C, H, W); got per-image shape {s:?}"
                )))
            }
        };
        if channels == 0 || height == 0 || width == 0 {
            return Err(Error::Shape(format!(
                "inputs have an empty dimension: per-image shape {per_image:?}"
            )));
        }
        let out_size = match consumer {
            Consumer::Conv(g) => g.output_size(height, width)?,
            _ => [1, 1],
        };
        // Every size derived from the shapes is checked once here, so that the unchecked
        // products in `layout`, `image_len` and `rows_per_image` cannot overflow later.
        let too_large = |what: &str| {
            Error::InvalidArgument(format!(
                "{what} is too large for this machine (per-image shape {per_image:?})"
            ))
        };
        out_size[0]
            .checked_mul(out_size[1])
            .ok_or_else(|| too_large(&format!("a conv output of {out_size:?} positions")))?;
        channels
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .ok_or_else(|| too_large("an image"))?;
        let columns_per_channel = match consumer {
            Consumer::Linear => Some(1),
            Consumer::Conv(g) => g.kernel[0].checked_mul(g.kernel[1]),
            Consumer::FlattenLinear => height.checked_mul(width),
        };
        // D columns, and the D × D f64 Gram matrix in bytes.
        columns_per_channel
            .and_then(|g| g.checked_mul(channels))
            .and_then(|d| d.checked_mul(d))
            .and_then(|dd| dd.checked_mul(8))
            .ok_or_else(|| too_large("the Gram matrix (D × D columns)"))?;
        Ok(Self {
            consumer,
            channels,
            height,
            width,
            out_size,
        })
    }

    /// The channel layout of the unfolded matrix.
    pub fn layout(&self) -> ChannelLayout {
        let columns_per_channel = match self.consumer {
            Consumer::Linear => 1,
            Consumer::Conv(g) => g.kernel[0] * g.kernel[1],
            Consumer::FlattenLinear => self.height * self.width,
        };
        ChannelLayout {
            channels: self.channels,
            columns_per_channel,
        }
    }

    /// Values per image in the input tensor.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Rows of the unfolded matrix per image (output positions).
    pub fn rows_per_image(&self) -> usize {
        self.out_size[0] * self.out_size[1]
    }

    /// Unfolded rows of `images` images, or an error when the count overflows.
    pub fn total_rows(&self, images: usize) -> Result<usize> {
        images
            .checked_mul(self.rows_per_image())
            .filter(|rows| rows.checked_mul(self.layout().columns()).is_some())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{images} images × {} rows per image ({}×{} output positions) × {} columns \
                     is too large for this machine; check the conv geometry",
                    self.rows_per_image(),
                    self.out_size[0],
                    self.out_size[1],
                    self.layout().columns()
                ))
            })
    }

    /// Whether the unfolded matrix is the input itself, one image a row (no im2col needed).
    pub fn is_dense(&self) -> bool {
        !matches!(self.consumer, Consumer::Conv(_))
    }

    /// Checks a batch `(n, C[, H, W])` against this unfolding and returns its image count.
    pub fn check_batch(&self, batch: &TensorView<'_>, name: &str) -> Result<usize> {
        self.check_shape(batch.shape, name)
    }

    /// [`Self::check_batch`] from the shape alone (e.g. of a tensor on a device).
    pub fn check_shape(&self, shape: &[usize], name: &str) -> Result<usize> {
        let per_image = shape.get(1..).unwrap_or(&[]);
        let expected: &[usize] = match self.consumer {
            Consumer::Linear => &[self.channels],
            _ => &[self.channels, self.height, self.width],
        };
        if shape.is_empty() || per_image != expected {
            return Err(Error::Shape(format!(
                "{name} has shape {:?}, expected (N, {})",
                shape,
                expected
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(shape[0])
    }

    /// Writes columns `columns.start .. columns.end` of the unfolded rows `first .. first + rows`
    /// of `images` (a batch, row-major `(n, C, H, W)`), transposed: `out` holds one unfolded
    /// column after the other, each `rows` long (`out[(col - columns.start) · rows + r]`).
    /// Padding positions are zeros.
    ///
    /// This is the layout the CPU statistics use for conv consumers: a column is one input plane
    /// shifted by one kernel offset, so it is filled by contiguous copies of image rows (the
    /// row-major layout of [`Self::unfold_rows`] gathers `D` values `H·W` apart for every row).
    pub fn unfold_columns(
        &self,
        images: &[f32],
        first: usize,
        rows: usize,
        columns: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        debug_assert_eq!(out.len(), columns.len() * rows);
        let Consumer::Conv(g) = self.consumer else {
            let d = self.layout().columns();
            for (col, dst) in columns.zip(out.chunks_exact_mut(rows.max(1))) {
                for (r, v) in dst.iter_mut().enumerate() {
                    *v = images[(first + r) * d + col];
                }
            }
            return;
        };
        let [oh, ow] = self.out_size;
        let (h, w) = (self.height, self.width);
        let [kh, kw] = g.kernel;
        let positions = oh * ow;
        for (col, dst) in columns.zip(out.chunks_exact_mut(rows.max(1))) {
            let (c, i, j) = (col / (kh * kw), (col / kw) % kh, col % kw);
            // Output columns ox with 0 ≤ ox·s + j·dil − pad < w, i.e. x inside the image.
            let shift = (j * g.dilation[1]) as isize - g.padding[1] as isize;
            let s = g.stride[1] as isize;
            let lo = if shift >= 0 {
                0
            } else {
                ((-shift + s - 1) / s) as usize
            };
            let hi = if (w as isize) <= shift {
                0
            } else {
                (((w as isize - shift) + s - 1) / s) as usize
            }
            .min(ow);
            let mut k = 0;
            while k < rows {
                let r = first + k;
                let (img, pos) = (r / positions, r % positions);
                let (oy, ox0) = (pos / ow, pos % ow);
                let n = (ow - ox0).min(rows - k);
                let seg = &mut dst[k..k + n];
                let y = (oy * g.stride[0] + i * g.dilation[0]) as isize - g.padding[0] as isize;
                if y < 0 || y as usize >= h || lo >= hi {
                    seg.fill(0.0);
                } else {
                    let row = &images[(img * self.channels + c) * h * w + y as usize * w..][..w];
                    // Segment positions t ↔ ox = ox0 + t; inside for lo ≤ ox < hi.
                    let a = lo.saturating_sub(ox0).min(n);
                    let b = hi.saturating_sub(ox0).min(n);
                    seg[..a].fill(0.0);
                    seg[b.max(a)..].fill(0.0);
                    if a < b {
                        let x0 = ((ox0 + a) as isize * s + shift) as usize;
                        if s == 1 {
                            seg[a..b].copy_from_slice(&row[x0..x0 + (b - a)]);
                        } else {
                            for (t, v) in seg[a..b].iter_mut().enumerate() {
                                *v = row[x0 + t * s as usize];
                            }
                        }
                    }
                }
                k += n;
            }
        }
    }

    /// Writes unfolded rows `first .. first + out.len() / D` of `images` (a batch, row-major
    /// `(n, C, H, W)`) into `out` (row-major, `D` columns). Padding positions are zeros.
    pub fn unfold_rows(&self, images: &[f32], first: usize, out: &mut [f32]) {
        let d = self.layout().columns();
        match self.consumer {
            Consumer::Linear | Consumer::FlattenLinear => {
                out.copy_from_slice(&images[first * d..first * d + out.len()]);
            }
            Consumer::Conv(g) => {
                let [oh, ow] = self.out_size;
                let (h, w) = (self.height, self.width);
                let [kh, kw] = g.kernel;
                for (row_offset, row) in out.chunks_exact_mut(d).enumerate() {
                    let r = first + row_offset;
                    let (img, pos) = (r / (oh * ow), r % (oh * ow));
                    let (oy, ox) = (pos / ow, pos % ow);
                    let image = &images[img * self.image_len()..(img + 1) * self.image_len()];
                    for c in 0..self.channels {
                        let plane = &image[c * h * w..(c + 1) * h * w];
                        for i in 0..kh {
                            let y = (oy * g.stride[0] + i * g.dilation[0]) as isize
                                - g.padding[0] as isize;
                            for j in 0..kw {
                                let x = (ox * g.stride[1] + j * g.dilation[1]) as isize
                                    - g.padding[1] as isize;
                                let inside =
                                    y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w;
                                row[(c * kh + i) * kw + j] = if inside {
                                    plane[y as usize * w + x as usize]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                }
            }
        }
    }
}
