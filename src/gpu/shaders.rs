//! WGSL sources as compiled. The tiled kernels are the matmul core (`shaders/matmul.wgsl`)
//! followed by each kernel's own part, so that the statistics and the forward pass's
//! convolutions multiply with the same code; both read padded inputs written by one pad pass.

/// The Gram statistics kernels: `shaders/matmul.wgsl` + `shaders/gram.wgsl`.
pub const GRAM: &str = concat!(
    include_str!("../../shaders/matmul.wgsl"),
    include_str!("../../shaders/gram.wgsl")
);

/// The forward pass's implicit-GEMM convolution: `shaders/matmul.wgsl` + `shaders/conv.wgsl`.
pub const CONV: &str = concat!(
    include_str!("../../shaders/matmul.wgsl"),
    include_str!("../../shaders/conv.wgsl")
);

/// The pad pass of the statistics and of the forward convolution: `shaders/pad.wgsl`.
pub const PAD: &str = include_str!("../../shaders/pad.wgsl");
