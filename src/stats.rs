//! The layer problem and its Gram statistics (`docs/ALGORITHM.md` §1–2).
//!
//! A [`LayerProblem`] says how the consumer reads its input: which columns of the unfolded input
//! `B` (rows = images × output positions) belong to which channel, and the consumer weight `W`
//! reshaped to `D × m`. [`LayerStats`] holds what the greedy needs and nothing that grows with the
//! number of images: `gram = BᵀB`, `c0 = (BᵀA)·W` and `total = ‖AW‖²`.

use std::sync::{Arc, OnceLock};

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

/// A `D × D` matrix that a backend left on its device (the GPU backend's `G`), read back only
/// as far as the host needs it.
pub(crate) trait DeviceMatrix: Send + Sync {
    /// Rows `rows` (`dim` values each), in the order given, as f64.
    fn read_rows(&self, rows: &[usize]) -> Result<Vec<f64>>;
    /// For the backend that made the matrix: recognise its own (e.g. to copy it on the device).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The Gram matrix `G = BᵀB` (`D × D`, row-major): in host memory, or left on the GPU that
/// computed it.
///
/// The GPU backend keeps `G` on the device (`D² · 4` bytes, f32): its greedy copies it there
/// without a round trip through the host, and the host reads back only what it uses, i.e.
/// `G[S,S]` for the reweighting ([`Gram::submatrix`]) and the diagonal (returned with the
/// statistics). [`Gram::values`] reads the whole matrix back on first use and keeps the copy;
/// [`Gram::release_device`] does that and frees the device memory (for statistics held long,
/// e.g. one per layer of a network).
#[derive(Clone)]
pub struct Gram {
    dim: usize,
    host: Arc<OnceLock<Vec<f64>>>,
    device: Option<Arc<dyn DeviceMatrix>>,
    /// The diagonal, when the matrix was made on a device.
    diag: Vec<f64>,
    /// The device checked every entry finite.
    checked_finite: bool,
}

impl Gram {
    /// A matrix in host memory, row-major (`dim` is the square root of the length; a length
    /// that is not a square is refused where the matrix is used, e.g. by
    /// [`LayerStats::from_raw`]).
    pub fn from_host(values: Vec<f64>) -> Self {
        let dim = values.len().isqrt();
        Self {
            dim,
            host: Arc::new(OnceLock::from(values)),
            device: None,
            diag: Vec::new(),
            checked_finite: false,
        }
    }

    /// A `dim × dim` matrix on a device, with its diagonal already on the host; `finite`: the
    /// device found every entry finite.
    pub(crate) fn on_device(
        dim: usize,
        diag: Vec<f64>,
        matrix: Arc<dyn DeviceMatrix>,
        finite: bool,
    ) -> Self {
        Self {
            dim,
            host: Arc::new(OnceLock::new()),
            device: Some(matrix),
            diag,
            checked_finite: finite,
        }
    }

    /// `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Entries: `D²`, or the length of the host vector it was made from.
    pub fn len(&self) -> usize {
        match self.host.get() {
            Some(v) => v.len(),
            None => self.dim * self.dim,
        }
    }

    /// Whether the matrix has no entries (`D = 0`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the matrix (still) lives on a device.
    pub fn is_on_device(&self) -> bool {
        self.device.is_some()
    }

    /// The host copy, when there is one (no readback).
    pub fn host_values(&self) -> Option<&[f64]> {
        self.host.get().map(Vec::as_slice)
    }

    /// All entries, row-major; a matrix on a device is read back on the first call and the copy
    /// kept.
    pub fn values(&self) -> Result<&[f64]> {
        if let Some(v) = self.host.get() {
            return Ok(v);
        }
        let device = self.device.as_ref().ok_or_else(|| {
            Error::Shape("a Gram matrix with neither a host copy nor a device copy".into())
        })?;
        let rows: Vec<usize> = (0..self.dim).collect();
        let values = device.read_rows(&rows)?;
        Ok(self.host.get_or_init(|| values))
    }

    /// The diagonal `G[i,i]`.
    pub fn diag(&self) -> Vec<f64> {
        match self.host.get() {
            Some(v) => (0..self.dim).map(|i| v[i * self.dim + i]).collect(),
            None => self.diag.clone(),
        }
    }

    /// `G[idx, idx]`, `idx.len()²` entries row-major. From the host copy when there is one,
    /// else only the rows `idx` are read back from the device.
    pub fn submatrix(&self, idx: &[usize]) -> Result<Vec<f64>> {
        let d = self.dim;
        if let Some(&bad) = idx.iter().find(|&&i| i >= d) {
            return Err(Error::InvalidArgument(format!(
                "Gram matrix index {bad} is out of range (D = {d})"
            )));
        }
        let n = idx.len();
        let mut out = vec![0.0; n * n];
        let gather = |rows: &[f64], row_of: &dyn Fn(usize) -> usize, out: &mut [f64]| {
            for (i, dst) in out.chunks_exact_mut(n.max(1)).enumerate() {
                let row = &rows[row_of(i) * d..(row_of(i) + 1) * d];
                for (t, &j) in dst.iter_mut().zip(idx) {
                    *t = row[j];
                }
            }
        };
        match (self.host.get(), &self.device) {
            (Some(v), _) => gather(v, &|i| idx[i], &mut out),
            (None, Some(device)) => gather(&device.read_rows(idx)?, &|i| i, &mut out),
            (None, None) => {
                return Err(Error::Shape(
                    "a Gram matrix with neither a host copy nor a device copy".into(),
                ))
            }
        }
        Ok(out)
    }

    /// Reads the matrix back if it is on a device, and frees the device copy.
    pub fn release_device(&mut self) -> Result<()> {
        self.values()?;
        self.device = None;
        Ok(())
    }

    /// The device copy, for the backend that made it.
    pub(crate) fn device_matrix(&self) -> Option<&dyn DeviceMatrix> {
        self.device.as_deref()
    }

    /// Whether the device that made the matrix found every entry finite.
    pub(crate) fn checked_finite(&self) -> bool {
        self.checked_finite
    }
}

impl From<Vec<f64>> for Gram {
    fn from(values: Vec<f64>) -> Self {
        Self::from_host(values)
    }
}

impl std::fmt::Debug for Gram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gram")
            .field("dim", &self.dim)
            .field("on_host", &self.host.get().is_some())
            .field("on_device", &self.device.is_some())
            .finish()
    }
}

/// Raw second-moment sums of the unfolded inputs `B` and targets `A`, as a backend returns them.
#[derive(Clone, Debug)]
pub struct RawGrams {
    /// `BᵀB`, `D × D` row-major (on the host, or left on the GPU device).
    pub gram: Gram,
    /// `BᵀA`, `D × D` row-major, only when a separate target was given.
    pub cross: Option<Vec<f64>>,
    /// `AᵀA`, `D × D` row-major, only when a separate target was given.
    pub target_gram: Option<Vec<f64>>,
    /// Unfolded rows accumulated (images × output positions).
    pub rows: usize,
    /// `C0 = X·W` (`D × m`, row-major) when the backend computed it next to the sums
    /// ([`crate::backend::StatsAccumulator::finish_with_weight`]); `None`: the host computes it.
    pub c0: Option<Vec<f64>>,
    /// `‖AW‖²` when the backend computed it; `None`: the host computes it.
    pub total: Option<f64>,
    /// Where the time went.
    pub phases: StatsPhases,
}

/// The statistics of one layer problem: everything the greedy and the reweighting need.
#[derive(Clone, Debug)]
pub struct LayerStats {
    /// Channel layout of the unfolded input.
    pub layout: ChannelLayout,
    /// Consumer output channels `m`.
    pub outputs: usize,
    /// `G = BᵀB`, `D × D` row-major: on the host, or left on the GPU that computed it (see
    /// [`Gram`]).
    pub gram: Gram,
    /// `C0 = (BᵀA)·W`, `D × m` row-major.
    pub c0: Vec<f64>,
    /// `‖AW‖²_F`.
    pub total: f64,
    /// The consumer weight `W`, `D × m` row-major (for the no-reweighting error).
    pub weight: Vec<f64>,
    /// Unfolded rows accumulated.
    pub rows: usize,
    /// Where the time of the statistics went (the backend's phases plus the host's share here).
    pub phases: StatsPhases,
}

impl LayerStats {
    /// Combines raw Gram sums with the consumer weight: `C0 = X·W` (or `G·W`), `‖AW‖² =
    /// trace(Wᵀ (AᵀA) W)`, computed on the host in f64 unless the backend already did.
    pub fn from_raw(problem: &LayerProblem, raw: RawGrams) -> Result<Self> {
        let start = std::time::Instant::now();
        let layout = problem.layout();
        let d = layout.columns();
        let m = problem.outputs;
        if raw.gram.len() != d * d {
            return Err(Error::Shape(format!(
                "gram has {} entries, expected {d}×{d}",
                raw.gram.len()
            )));
        }
        // Finite inputs can still overflow the f32 sums (values around 1e19 and up): every
        // infinite pivot would then look like a dependent channel and the run would report an
        // error of 0. Checked here, where every backend's sums arrive (a matrix left on the
        // device was scanned there; it is read back only to name the entry).
        if !raw.gram.checked_finite() {
            check_finite_matrix("BᵀB (the Gram matrix of the inputs)", raw.gram.values()?, d)?;
        }
        if let Some(x) = &raw.cross {
            check_finite_matrix("BᵀA (inputs × target)", x, d)?;
        }
        if let Some(h) = &raw.target_gram {
            check_finite_matrix("AᵀA (the Gram matrix of the target)", h, d)?;
        }
        let w = &problem.weight;
        let c0 = match raw.c0 {
            Some(c0) if c0.len() == d * m => c0,
            Some(c0) => {
                return Err(Error::Shape(format!(
                    "C0 has {} entries, expected {d}×{m}",
                    c0.len()
                )))
            }
            None => {
                let x = match raw.cross.as_deref() {
                    Some(x) => x,
                    None => raw.gram.values()?,
                };
                matmul_f64(x, w, d, d, m)?
            }
        };
        let total = match (raw.total, &raw.target_gram) {
            (Some(total), _) => total,
            (None, None) => dot(&c0, w),
            (None, Some(h)) => dot(&matmul_f64(h, w, d, d, m)?, w),
        };
        check_finite_matrix("C0 = BᵀA·W", &c0, m)?;
        if !total.is_finite() {
            return Err(Error::NonFiniteStatistics {
                tensor: "‖AW‖²".into(),
                detail: format!("it is {total}"),
                hint: SCALE_HINT.into(),
            });
        }
        let mut phases = raw.phases;
        phases.host += start.elapsed().as_secs_f64();
        Ok(Self {
            layout,
            outputs: m,
            gram: raw.gram,
            c0,
            total,
            weight: w.clone(),
            rows: raw.rows,
            phases,
        })
    }
}

/// What to do when the statistics overflow.
const SCALE_HINT: &str = "the input values are too large for the f32 sums of their products: \
    scale the inputs (and the target) down by one common factor, e.g. divide them by 1e10; \
    that changes neither the selection nor the reweighted weights";

/// Fails with [`Error::NonFiniteStatistics`] naming `name` and the first non-finite entry of the
/// row-major matrix `a` with `cols` columns.
fn check_finite_matrix(name: &str, a: &[f64], cols: usize) -> Result<()> {
    match crate::validate::first_non_finite(a) {
        None => Ok(()),
        Some(i) => Err(Error::NonFiniteStatistics {
            tensor: name.into(),
            detail: format!("entry ({}, {}) is {}", i / cols, i % cols, a[i]),
            hint: SCALE_HINT.into(),
        }),
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `a (r × k) · b (k × c)`, row-major f64, on all of rayon's threads.
pub(crate) fn matmul_f64(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Result<Vec<f64>> {
    use crate::linalg::gemm::{gemm, MatMut, MatRef, Par};
    let mut out = vec![0.0; r * c];
    gemm(
        MatMut::row_major(&mut out, r, c)?,
        false,
        MatRef::row_major(a, r, k)?,
        MatRef::row_major(b, k, c)?,
        1.0,
        Par::all(),
    )?;
    Ok(out)
}

/// How a backend's kernel times were measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelClock {
    /// GPU timestamp queries around each pass (`Features::TIMESTAMP_QUERY`).
    Timestamps,
    /// Host wall-clock time (submission to completion, or the CPU's own computation).
    #[default]
    WallClock,
}

impl KernelClock {
    /// A short label for tables: `timestamps` or `wall-clock`.
    pub fn label(self) -> &'static str {
        match self {
            KernelClock::Timestamps => "timestamps",
            KernelClock::WallClock => "wall-clock",
        }
    }
}

/// Where the time of one layer's statistics went, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StatsPhases {
    /// Setting the accumulator up (buffers, tables, clearing the sums) and checking the
    /// inputs.
    pub setup: f64,
    /// Preparing and queueing the batches for the device (f16 conversion, staging copies); 0 on
    /// the CPU, which reads the batches in place.
    pub upload: f64,
    /// The Gram kernels (`BᵀB`, and `AᵀB`, `AᵀA` with a target).
    pub kernel: f64,
    /// Device-side work after the kernels: adding the row splits, the full f32 matrices, and
    /// `C0 = X·W`, `(AᵀA)·W` when computed on the device.
    pub reduce: f64,
    /// Device → host copies of the results.
    pub readback: f64,
    /// Host work: conversion to f64 and mirroring, and `C0`, `‖AW‖²` when computed on the host.
    pub host: f64,
    /// How `kernel` and `reduce` were measured.
    pub clock: KernelClock,
    /// Bytes of inputs and targets sent from the host to the device (0 on the CPU).
    pub uploaded_bytes: u64,
    /// Bytes of inputs copied from device-resident activations on the device itself (tapped
    /// activations of the GPU executor on the same device: no host round trip).
    pub device_bytes: u64,
    /// Row splits (split-K slices) of the largest Gram kernel dispatch; 0 on the CPU, which
    /// does not split.
    pub row_splits: u32,
}

impl StatsPhases {
    /// The sum of the phases.
    pub fn total(&self) -> f64 {
        self.setup + self.upload + self.kernel + self.reduce + self.readback + self.host
    }
}
