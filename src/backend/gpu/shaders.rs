//! The WGSL sources of the tiled kernels, as compiled: the matmul core (`shaders/matmul.wgsl`)
//! followed by each kernel's own part, so that the statistics and the forward pass's
//! convolutions multiply with the same code.

/// The Gram statistics kernels: `shaders/matmul.wgsl` + `shaders/gram.wgsl`.
pub const GRAM: &str = concat!(
    include_str!("../../../shaders/matmul.wgsl"),
    include_str!("../../../shaders/gram.wgsl")
);

/// The forward pass's implicit-GEMM convolution: `shaders/matmul.wgsl` + `shaders/conv.wgsl`.
pub const CONV: &str = concat!(
    include_str!("../../../shaders/matmul.wgsl"),
    include_str!("../../../shaders/conv.wgsl")
);
