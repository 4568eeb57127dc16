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
            Op::Binary(Binary::Add) => "Add",
            Op::Binary(Binary::Sub) => "Sub",
            Op::Binary(Binary::Mul) => "Mul",
            Op::Binary(Binary::Div) => "Div",
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
        }
    }

    /// Indices of the inputs that carry data (the rest are parameters: weights, bounds, shapes).
    pub fn data_inputs(&self, inputs: usize) -> std::ops::Range<usize> {
        match self {
            Op::Binary(_) | Op::Concat { .. } => 0..inputs,
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
        }
    }
}
