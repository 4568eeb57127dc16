//! Typed operations: every attribute parsed and defaulted, every parameter that ONNX passes as a
//! constant input (Clip bounds, Reshape shape, Slice ranges, Pad amounts) resolved to a value.
//! An op says what it computes, not how or where.

/// 2-D geometry shared by Conv and the pools: kernel, strides, dilations and explicit pads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides (rows, columns).
    pub strides: [usize; 2],
    /// Dilations (rows, columns).
    pub dilations: [usize; 2],
    /// How the padding is decided.
    pub padding: Padding,
    /// Pools only: round the output size up rather than down.
    pub ceil_mode: bool,
}

/// Padding of a [`Window`], as ONNX's `auto_pad` and `pads` give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Explicit pads `[top, left, bottom, right]`.
    Explicit([usize; 4]),
    /// `SAME_UPPER`: output = ceil(input / stride), extra padding at the end.
    SameUpper,
    /// `SAME_LOWER`: output = ceil(input / stride), extra padding at the start.
    SameLower,
}

impl Window {
    /// Resolved pads `[top, left, bottom, right]` and output size for an `h × w` input, or a
    /// message when the window does not fit.
    pub fn resolve(&self, h: usize, w: usize) -> Result<([usize; 4], [usize; 2]), String> {
        let input = [h, w];
        let mut pads = [0usize; 4];
        let mut out = [0usize; 2];
        for a in 0..2 {
            let (k, s, d) = (self.kernel[a], self.strides[a], self.dilations[a]);
            if k == 0 || s == 0 || d == 0 {
                return Err(format!(
                    "kernel {:?}, strides {:?}, dilations {:?} must be ≥ 1",
                    self.kernel, self.strides, self.dilations
                ));
            }
            let too_big = |what: &str| {
                format!(
                    "{what} overflows (kernel {:?}, strides {:?}, dilations {:?}, padding {:?}, input {h}×{w})",
                    self.kernel, self.strides, self.dilations, self.padding
                )
            };
            let span = d
                .checked_mul(k - 1)
                .and_then(|x| x.checked_add(1))
                .ok_or_else(|| too_big("the dilated window"))?;
            match self.padding {
                Padding::Explicit(p) => {
                    pads[a] = p[a];
                    pads[a + 2] = p[a + 2];
                }
                Padding::SameUpper | Padding::SameLower => {
                    let o = input[a].div_ceil(s);
                    let total = o
                        .saturating_sub(1)
                        .checked_mul(s)
                        .and_then(|x| x.checked_add(span))
                        .ok_or_else(|| too_big("the automatic padding"))?
                        .saturating_sub(input[a]);
                    let (small, big) = (total / 2, total - total / 2);
                    if self.padding == Padding::SameUpper {
                        pads[a] = small;
                        pads[a + 2] = big;
                    } else {
                        pads[a] = big;
                        pads[a + 2] = small;
                    }
                }
            }
            let padded = input[a]
                .checked_add(pads[a])
                .and_then(|x| x.checked_add(pads[a + 2]))
                .filter(|&x| x <= super::shape::MAX_ELEMENTS)
                .ok_or_else(|| too_big("the padded input"))?;
            if padded < span {
                return Err(format!(
                    "window of {span} does not fit the padded input of {padded} (input {h}×{w})"
                ));
            }
            out[a] = if self.ceil_mode {
                let o = (padded - span).div_ceil(s) + 1;
                // ONNX/PyTorch: the last window must start inside the input or the begin pad.
                // (o − 1)·s ≤ padded − span + s − 1 fits: padded ≤ MAX_ELEMENTS.
                if (o - 1) * s >= input[a] + pads[a] {
                    o - 1
                } else {
                    o
                }
            } else {
                (padded - span) / s + 1
            };
        }
        Ok((pads, out))
    }
}

/// A convolution over NCHW input with an `(M, C/group, kh, kw)` weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv {
    /// Kernel, strides, dilations, pads.
    pub window: Window,
    /// Channel groups (`group` = input channels = output channels for a depthwise conv).
    pub group: usize,
}

/// `Y = alpha · op(A) · op(B) + beta · C`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of `C`.
    pub beta: f32,
    /// Use `Aᵀ`.
    pub trans_a: bool,
    /// Use `Bᵀ` (PyTorch's Linear layout).
    pub trans_b: bool,
}

/// Element-wise binary ops with NumPy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`
    Add,
    /// `a − b`
    Sub,
    /// `a · b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)` (a two-input ONNX `Max`, or one step of an n-ary one).
    Max,
    /// `min(a, b)`
    Min,
}

/// Element-wise ops over any number of inputs with NumPy broadcasting (ONNX `Sum`, `Max`, `Min`):
/// a left fold of the matching [`Binary`] op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nary {
    /// `a + b + …`
    Sum,
    /// `max(a, b, …)`
    Max,
    /// `min(a, b, …)`
    Min,
}

impl Nary {
    /// The binary op the fold applies.
    pub fn step(self) -> Binary {
        match self {
            Nary::Sum => Binary::Add,
            Nary::Max => Binary::Max,
            Nary::Min => Binary::Min,
        }
    }
}

/// Reduction kind of [`Op::Reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// Mean of the reduced values.
    Mean,
    /// Largest reduced value.
    Max,
    /// Sum of the reduced values.
    Sum,
}

/// How [`Op::Resize`] picks or mixes input pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    /// The nearest input pixel, rounded as given.
    Nearest(NearestRounding),
    /// Bilinear interpolation (ONNX `linear` on the two spatial axes).
    Linear,
}

/// ONNX `nearest_mode`: how a fractional source coordinate becomes an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestRounding {
    /// Halves go down.
    RoundPreferFloor,
    /// Halves go up.
    RoundPreferCeil,
    /// Always down.
    Floor,
    /// Always up.
    Ceil,
}

/// ONNX `coordinate_transformation_mode`: the source coordinate of output pixel `x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordMode {
    /// `(x + ½) / scale − ½`
    HalfPixel,
    /// As `HalfPixel`, but 0 when the output axis has one pixel.
    PytorchHalfPixel,
    /// `x · (in − 1) / (out − 1)` (0 for one output pixel).
    AlignCorners,
    /// `x / scale`
    Asymmetric,
}

/// Resizing of the two spatial axes of an NCHW tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Resize {
    /// Nearest or bilinear.
    pub mode: ResizeMode,
    /// Source coordinate of an output pixel.
    pub coord: CoordMode,
    /// Scales (rows, columns): output = ⌊input · scale⌋ unless `sizes` is given.
    pub scales: [f32; 2],
    /// Output (rows, columns) as given; the scales are then output / input.
    pub sizes: Option<[usize; 2]>,
}

impl Resize {
    /// Output size and the scale the coordinate transform uses, per spatial axis, for an input
    /// of `input` (rows, columns).
    pub fn resolve(&self, input: [usize; 2]) -> Result<([usize; 2], [f32; 2]), String> {
        let mut out = [0; 2];
        let mut scales = self.scales;
        for a in 0..2 {
            out[a] = match self.sizes {
                Some(s) => {
                    scales[a] = s[a] as f32 / input[a] as f32;
                    s[a]
                }
                None => {
                    let o = (input[a] as f64 * self.scales[a] as f64).floor();
                    if !(o.is_finite() && o >= 0.0 && o <= super::shape::MAX_ELEMENTS as f64) {
                        return Err(format!(
                            "scales {:?} give no valid output size for input {input:?}",
                            self.scales
                        ));
                    }
                    o as usize
                }
            };
            if !(scales[a] > 0.0 && scales[a].is_finite()) {
                return Err(format!("scale {} must be positive", scales[a]));
            }
        }
        Ok((out, scales))
    }
}

/// A transposed convolution over NCHW input with a `(C, M/group, kh, kw)` weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvTranspose {
    /// Kernel, strides, dilations and the pads cropped from the full output (always explicit).
    pub window: Window,
    /// Extra rows and columns added at the end of the output.
    pub output_padding: [usize; 2],
    /// Channel groups.
    pub group: usize,
}

impl ConvTranspose {
    /// The pads `[top, left, bottom, right]` cropped from the full output.
    pub fn pads(&self) -> [usize; 4] {
        match self.window.padding {
            Padding::Explicit(p) => p,
            Padding::SameUpper | Padding::SameLower => [0; 4],
        }
    }

    /// Output (rows, columns) for an `h × w` input:
    /// `stride · (in − 1) + output_padding + dilation · (k − 1) + 1 − pads`.
    pub fn output(&self, h: usize, w: usize) -> Result<[usize; 2], String> {
        let (win, pads) = (&self.window, self.pads());
        let mut out = [0; 2];
        for (a, &n) in [h, w].iter().enumerate() {
            let full = (n.max(1) as u128 - 1) * win.strides[a] as u128
                + self.output_padding[a] as u128
                + win.dilations[a] as u128 * (win.kernel[a].max(1) as u128 - 1)
                + 1;
            let crop = pads[a] as u128 + pads[a + 2] as u128;
            if n == 0 || full <= crop || full - crop > super::shape::MAX_ELEMENTS as u128 {
                return Err(format!(
                    "input {h}×{w} with {self:?} gives no valid output size"
                ));
            }
            out[a] = (full - crop) as usize;
        }
        Ok(out)
    }
}

/// Local response normalisation across channels (ONNX `LRN`):
/// `y = x / (bias + alpha / size · Σ x²)^beta`, the sum over `size` neighbouring channels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lrn {
    /// Channels in the window.
    pub size: usize,
    /// Scale of the sum of squares (divided by `size`).
    pub alpha: f32,
    /// Exponent.
    pub beta: f32,
    /// Offset.
    pub bias: f32,
}

/// Element-wise unary ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `max(x, 0)`
    Relu,
    /// `x` if `x ≥ 0`, else `alpha · x`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `min(max(x, min), max)`; a missing bound is ±∞.
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `1 / (1 + e^−x)`
    Sigmoid,
    /// `max(0, min(1, alpha · x + beta))`
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x · max(0, min(1, x / 6 + 1/2))`
    HardSwish,
    /// `tanh(x)`
    Tanh,
    /// `e^x`
    Exp,
    /// `ln(1 + e^x)`
    Softplus,
    /// `√x`
    Sqrt,
    /// The error function (GELU's building block).
    Erf,
    /// `x^exponent` for a constant exponent (ONNX `Pow` with a one-value constant exponent).
    Pow {
        /// The exponent.
        exponent: f32,
    },
}

/// Pooling kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Maximum over the window (padding never wins).
    Max,
    /// Mean over the window.
    Average {
        /// Divide by the full window size, padding included (else by the valid count).
        count_include_pad: bool,
    },
}

/// Border mode of [`Op::Pad`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// Fill with a constant.
    Constant,
    /// Mirror without repeating the edge.
    Reflect,
    /// Repeat the edge.
    Edge,
}

/// A typed operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// 2-D convolution; inputs `X, W[, B]`.
    Conv(Conv),
    /// General matrix product with bias; inputs `A, B[, C]`.
    Gemm(Gemm),
    /// Matrix product with NumPy batching; inputs `A, B`.
    MatMul,
    /// Inference-mode batch normalization over axis 1; inputs `X, scale, B, mean, var`.
    BatchNorm {
        /// Added to the variance.
        epsilon: f32,
    },
    /// Element-wise unary op.
    Unary(Unary),
    /// Element-wise binary op with broadcasting.
    Binary(Binary),
    /// 2-D max or average pooling.
    Pool {
        /// Max or average.
        kind: PoolKind,
        /// Kernel, strides, dilations, pads, ceil mode.
        window: Window,
    },
    /// Mean over all spatial positions, keeping them as 1×1.
    GlobalAveragePool,
    /// `(d0·…·d{axis−1}, d{axis}·…)`.
    Flatten {
        /// First axis of the second dimension.
        axis: usize,
    },
    /// Reshape to `shape` (ONNX semantics: 0 copies the input dimension unless `allow_zero`,
    /// −1 is inferred).
    Reshape {
        /// The target shape as given.
        shape: Vec<i64>,
        /// A 0 means an empty dimension rather than "copy".
        allow_zero: bool,
    },
    /// Concatenation along `axis` (non-negative).
    Concat {
        /// The axis.
        axis: usize,
    },
    /// Strided slice; one entry per sliced axis (all normalised to non-negative axes).
    Slice {
        /// Start per axis (may be negative or out of range, clamped as ONNX says).
        starts: Vec<i64>,
        /// End per axis (exclusive, same rules).
        ends: Vec<i64>,
        /// The sliced axes.
        axes: Vec<usize>,
        /// Steps per axis (non-zero).
        steps: Vec<i64>,
    },
    /// Padding; `pads` holds `[begin of each axis…, end of each axis…]` for every axis (negative
    /// values crop).
    Pad {
        /// Border mode.
        mode: PadMode,
        /// Begins then ends, one per axis of the input.
        pads: Vec<i64>,
        /// Fill value of [`PadMode::Constant`].
        value: f32,
    },
    /// The values at constant `indices` along `axis` (ONNX Gather with constant indices, on
    /// data): the output has `index_dims` in place of the axis.
    Gather {
        /// The axis (non-negative, never the batch).
        axis: usize,
        /// Indices into the axis (non-negative, in range).
        indices: Vec<usize>,
        /// The shape of the indices (empty for one index: the axis is dropped).
        index_dims: Vec<usize>,
    },
    /// Broadcast to `shape` (ONNX Expand, NumPy rules: a 1 keeps the input's size).
    Expand {
        /// The target shape; the batch where the file computes it from a shape.
        shape: Vec<super::shape::Dim>,
    },
    /// Copy (also Dropout in inference).
    Identity,
    /// A constant (ONNX `Constant`); the value lives on the output [`crate::ir::Value`].
    Constant,
    /// Softmax along `axis`; with `coerce_2d` (opset < 13) the input is seen as
    /// `(d0·…·d{axis−1}, rest)` and normalised over the whole second part.
    Softmax {
        /// The axis (non-negative).
        axis: usize,
        /// Opset < 13 semantics.
        coerce_2d: bool,
    },
    /// Split along `axis` into consecutive parts of `sizes`, one output per part.
    Split {
        /// The axis (non-negative).
        axis: usize,
        /// Length of each part along the axis.
        sizes: Vec<usize>,
    },
    /// Axis permutation: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// Resizing of the spatial axes (nearest or bilinear).
    Resize(Resize),
    /// Element-wise `Sum`, `Max` or `Min` of any number of inputs with broadcasting.
    Nary(Nary),
    /// Transposed 2-D convolution; inputs `X, W[, B]`.
    ConvTranspose(ConvTranspose),
    /// Mean, max or sum over `axes` (consecutive, never the batch).
    Reduce {
        /// Mean, max or sum.
        kind: ReduceKind,
        /// The reduced axes, sorted and consecutive.
        axes: Vec<usize>,
        /// Keep the reduced axes as size 1.
        keepdims: bool,
    },
    /// Maximum over all spatial positions, keeping them as 1×1.
    GlobalMaxPool,
    /// Local response normalisation across channels.
    Lrn(Lrn),
}

impl Op {
    /// A short name for messages and op counts (the ONNX op type where there is one).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::Gemm(_) => "Gemm",
            Op::MatMul => "MatMul",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Unary(Unary::Relu) => "Relu",
            Op::Unary(Unary::LeakyRelu { .. }) => "LeakyRelu",
            Op::Unary(Unary::Clip { .. }) => "Clip",
            Op::Unary(Unary::Sigmoid) => "Sigmoid",
            Op::Unary(Unary::HardSigmoid { .. }) => "HardSigmoid",
            Op::Unary(Unary::HardSwish) => "HardSwish",
            Op::Unary(Unary::Tanh) => "Tanh",
            Op::Unary(Unary::Exp) => "Exp",
            Op::Unary(Unary::Softplus) => "Softplus",
            Op::Unary(Unary::Sqrt) => "Sqrt",
            Op::Unary(Unary::Erf) => "Erf",
            Op::Unary(Unary::Pow { .. }) => "Pow",
            Op::Binary(Binary::Add) => "Add",
            Op::Binary(Binary::Sub) => "Sub",
            Op::Binary(Binary::Mul) => "Mul",
            Op::Binary(Binary::Div) => "Div",
            Op::Binary(Binary::Max) | Op::Nary(Nary::Max) => "Max",
            Op::Binary(Binary::Min) | Op::Nary(Nary::Min) => "Min",
            Op::Nary(Nary::Sum) => "Sum",
            Op::Pool {
                kind: PoolKind::Max,
                ..
            } => "MaxPool",
            Op::Pool {
                kind: PoolKind::Average { .. },
                ..
            } => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Concat { .. } => "Concat",
            Op::Slice { .. } => "Slice",
            Op::Pad { .. } => "Pad",
            Op::Gather { .. } => "Gather",
            Op::Expand { .. } => "Expand",
            Op::Identity => "Identity",
            Op::Constant => "Constant",
            Op::Softmax { .. } => "Softmax",
            Op::Split { .. } => "Split",
            Op::Transpose { .. } => "Transpose",
            Op::Resize(_) => "Resize",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::Reduce {
                kind: ReduceKind::Mean,
                ..
            } => "ReduceMean",
            Op::Reduce {
                kind: ReduceKind::Max,
                ..
            } => "ReduceMax",
            Op::Reduce {
                kind: ReduceKind::Sum,
                ..
            } => "ReduceSum",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::Lrn(_) => "LRN",
        }
    }

    /// Indices of the inputs that carry data (the rest are parameters: weights, bounds, shapes).
    pub fn data_inputs(&self, inputs: usize) -> std::ops::Range<usize> {
        match self {
            Op::Binary(_) | Op::Concat { .. } | Op::Nary(_) => 0..inputs,
            Op::Constant => 0..0,
            _ => 0..inputs.min(1),
        }
    }
}

impl Unary {
    /// Applies the op to one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Unary::Relu => x.max(0.0),
            Unary::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Unary::Clip { min, max } => x.max(min).min(max),
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Unary::Tanh => x.tanh(),
            Unary::Exp => x.exp(),
            // ln(1 + eˣ) without overflow: x + ln(1 + e⁻ˣ) for positive x.
            Unary::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
            Unary::Sqrt => x.sqrt(),
            Unary::Erf => erf(x),
            Unary::Pow { exponent } => pow(x, exponent),
        }
    }
}

impl Binary {
    /// Applies the op to one pair.
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Max => a.max(b),
            Binary::Min => a.min(b),
        }
    }
}

/// The error function: Numerical Recipes' `erfc` Chebyshev fit (relative error below 1.2e-7
/// everywhere), in f64 rounded once; `shaders/forward.wgsl` evaluates the same formula in f32.
pub fn erf(x: f32) -> f32 {
    let z = (x as f64).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398
                                + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    (if x >= 0.0 { 1.0 - erfc } else { erfc - 1.0 }) as f32
}

/// `x^e` as ONNX computes it: `x · x` for 2 (exact), a square root for ½, `powf` otherwise.
pub fn pow(x: f32, e: f32) -> f32 {
    if e == 2.0 {
        x * x
    } else if e == 0.5 {
        x.sqrt()
    } else {
        x.powf(e)
    }
}
