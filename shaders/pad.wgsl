// The pad pass of the statistics and of the forward convolution: both tiled kernels (gram.wgsl,
// conv.wgsl) read convolution inputs from a copy whose planes are framed by the conv's zero
// padding, so that their reads need no border test. This pass writes that copy: the batch
// (n, C, height, width) in `source` becomes (n, C, Hp, Wp) in `padded`, every plane framed by
// `top` zero rows and `left` zero columns before it (and the rest of Hp × Wp after). Uploaded f16
// values (`half_inputs = 1`, two per u32, low half first) are widened to f32 on the way; with no
// padding the pass only widens them (a dense batch is one plane of one row per image).

// Threads per workgroup; the host dispatches a 2-D grid of them (one thread per output value).
const THREADS: u32 = 256u;
// `unpadded_index` of a zero of the frame.
const NO_SOURCE: u32 = 0xffffffffu;

struct PadParams {
    // Values per padded image (C·Hp·Wp), per padded plane (Hp·Wp), per padded row (Wp).
    padded_len: u32,
    padded_plane: u32,
    padded_width: u32,
    // Zero rows above and zero columns left of each plane.
    top: u32,
    left: u32,
    // The unpadded plane, and values per unpadded image (C·height·width).
    height: u32,
    width: u32,
    raw_len: u32,
    // Values to write (images · padded_len).
    count: u32,
    // 1: `source` holds f16 pairs; 0: f32 bit patterns.
    half_inputs: u32,
}

@group(0) @binding(0) var<uniform> p: PadParams;
// The unpadded batch (n, C, height, width), row-major: f32 bit patterns, or f16 pairs.
@group(0) @binding(1) var<storage, read> source: array<u32>;
// The padded batch (n, C, Hp, Wp), row-major f32 (`count` values).
@group(0) @binding(2) var<storage, read_write> padded: array<f32>;

// The flat index of the unpadded batch that padded value `i` comes from, or NO_SOURCE for a
// zero of the frame.
fn unpadded_index(i: u32) -> u32 {
    let img = i / p.padded_len;
    let in_image = i - img * p.padded_len;
    let c = in_image / p.padded_plane;
    let in_plane = in_image - c * p.padded_plane;
    let yp = in_plane / p.padded_width;
    let xp = in_plane - yp * p.padded_width;
    if yp < p.top || xp < p.left || yp - p.top >= p.height || xp - p.left >= p.width {
        return NO_SOURCE;
    }
    return img * p.raw_len + (c * p.height + yp - p.top) * p.width + xp - p.left;
}

// The source value at flat index `idx` (f32, or f16 pairs).
fn fetch(idx: u32) -> f32 {
    if p.half_inputs != 0u {
        let pair = unpack2x16float(source[idx >> 1u]);
        return select(pair.x, pair.y, (idx & 1u) == 1u);
    }
    return bitcast<f32>(source[idx]);
}

@compute @workgroup_size(THREADS)
fn pad_planes(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * THREADS;
    if i >= p.count {
        return;
    }
    let src = unpadded_index(i);
    var v = 0.0;
    if src != NO_SOURCE {
        v = fetch(src);
    }
    padded[i] = v;
}
