// The forward pass's simple kernels (everything but the GEMMs of conv.wgsl): one thread per
// output element (per output plane or softmax group where noted), on row-major NCHW f32 tensors.
// Dispatched as a 2-D grid of FLAT_THREADS-thread workgroups; the thread's linear index is
// `gid.x + gid.y · groups.x · FLAT_THREADS`, checked against `p.count`.
//
// Bindings: `a` is the data input, `b` a second input or the node's parameters (per-channel
// affine, depthwise weights), `out` the output. Shapes of rank ≤ MAX_RANK travel in `dims`,
// `sa`, `sb` (index d at [d / 4][d % 4]).

const FLAT_THREADS: u32 = 256u;
const MAX_RANK: u32 = 8u;

struct FwdParams {
    // Threads that do work (output elements, planes or softmax groups).
    count: u32,
    // Op code (per kernel; see each entry point).
    op: u32,
    // Rank of the output (broadcast, gather, pad).
    rank: u32,
    // Channels (affine, depthwise).
    channels: u32,
    // Inner size: values per channel (affine), per row (copy_into), softmax stride.
    inner: u32,
    // Length: of the reduced axis (softmax), of a plane (global average), of an output row
    // (copy_into).
    len: u32,
    // Offset: first source element (gather), destination column (copy_into).
    offset: i32,
    // Flags: count_include_pad (pool), bias present (depthwise).
    flag: u32,
    // Float parameters of the op.
    fa: f32,
    fb: f32,
    fc: f32,
    _pad1: u32,
    // Window geometry: input (h, w), output (h, w), kernel (h, w), strides, dilations, pads
    // (top, left, bottom, right).
    geo_in_out: vec4<u32>,
    geo_kernel_stride: vec4<u32>,
    geo_dil_pad: vec4<u32>,
    geo_pad_end: vec4<u32>,
    // Output dimensions.
    dims: array<vec4<u32>, 2>,
    // Per-kernel strides: of a (broadcast), source steps (gather), input dims (pad).
    sa: array<vec4<i32>, 2>,
    // Strides of b (broadcast), pads at the beginning (pad).
    sb: array<vec4<i32>, 2>,
}

@group(0) @binding(0) var<uniform> p: FwdParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * FLAT_THREADS;
}

fn dim(d: u32) -> u32 {
    return p.dims[d / 4u][d % 4u];
}

fn stride_a(d: u32) -> i32 {
    return p.sa[d / 4u][d % 4u];
}

fn stride_b(d: u32) -> i32 {
    return p.sb[d / 4u][d % 4u];
}

// The first value of group i = (o, j) of outer × inner over outer × len × inner: o·len·inner + j
// (softmax, reduce).
fn group_base(i: u32) -> u32 {
    let o = i / p.inner;
    return o * p.len * p.inner + (i - o * p.inner);
}

// The output pixel of flat index i over planes of oh × ow (geo_in_out.zw): (plane, row, column).
fn out_pixel(i: u32) -> vec3<u32> {
    let ohw = p.geo_in_out.z * p.geo_in_out.w;
    let plane = i / ohw;
    let rest = i - plane * ohw;
    return vec3<u32>(plane, rest / p.geo_in_out.w, rest % p.geo_in_out.w);
}

// Unary ops: 0 Relu, 1 LeakyRelu(fa), 2 Clip(fa, fb), 3 Sigmoid, 4 HardSigmoid(fa, fb),
// 5 HardSwish, 6 copy, 7 Tanh, 8 Exp, 9 Softplus, 10 Sqrt, 11 Erf, 12 Pow(fa).
fn unary_op(op: u32, v: f32) -> f32 {
    switch op {
        case 0u: { return max(v, 0.0); }
        case 1u: { return select(p.fa * v, v, v >= 0.0); }
        case 2u: { return min(max(v, p.fa), p.fb); }
        case 3u: { return 1.0 / (1.0 + exp(-v)); }
        case 4u: { return clamp(p.fa * v + p.fb, 0.0, 1.0); }
        case 5u: { return v * clamp(v / 6.0 + 0.5, 0.0, 1.0); }
        case 7u: { return tanh(v); }
        case 8u: { return exp(v); }
        case 9u: { return max(v, 0.0) + log(1.0 + exp(-abs(v))); }
        case 10u: { return sqrt(v); }
        case 11u: { return erf(v); }
        case 12u: { return power(v, p.fa); }
        default: { return v; }
    }
}

// Numerical Recipes' erfc fit (relative error < 1.2e-7), as `ir::op::erf` on the CPU.
fn erf(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * exp(poly);
    return select(erfc - 1.0, 1.0 - erfc, x >= 0.0);
}

// x^e as the CPU's powf: WGSL's pow is undefined for x < 0, so integer exponents take |x| and
// the sign of an odd power; other exponents of a negative x give NaN (as powf).
fn power(x: f32, e: f32) -> f32 {
    if e == 2.0 {
        return x * x;
    }
    if e == 0.5 {
        return sqrt(x);
    }
    if x >= 0.0 {
        return pow(x, e);
    }
    if e == floor(e) {
        let m = pow(-x, e);
        return select(m, -m, abs(e % 2.0) == 1.0);
    }
    return sqrt(-1.0 + 0.0 * x);
}

@compute @workgroup_size(FLAT_THREADS)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    out[i] = unary_op(p.op, a[i]);
}

// out = a · b[c] + b[channels + c] with c = (i / inner) % channels (a folded BatchNorm).
@compute @workgroup_size(FLAT_THREADS)
fn affine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    let c = (i / p.inner) % p.channels;
    out[i] = a[i] * b[c] + b[p.channels + c];
}

// Broadcast binary op (0 Add, 1 Sub, 2 Mul, 3 Div, 4 Max, 5 Min): out[idx] = a[Σ idx·sa] ∘ b[Σ idx·sb].
@compute @workgroup_size(FLAT_THREADS)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    var r = i;
    var ia = 0i;
    var ib = 0i;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let size = dim(u32(d));
        let q = r / size;
        let j = i32(r - q * size);
        r = q;
        ia += j * stride_a(u32(d));
        ib += j * stride_b(u32(d));
    }
    let x = a[ia];
    let y = b[ib];
    var v: f32;
    switch p.op {
        case 0u: { v = x + y; }
        case 1u: { v = x - y; }
        case 2u: { v = x * y; }
        case 4u: { v = max(x, y); }
        case 5u: { v = min(x, y); }
        default: { v = x / y; }
    }
    out[i] = v;
}

// Strided gather (Slice): out[idx] = a[offset + Σ idx·sa] (steps may be negative).
@compute @workgroup_size(FLAT_THREADS)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    var r = i;
    var src = p.offset;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let size = dim(u32(d));
        let q = r / size;
        src += i32(r - q * size) * stride_a(u32(d));
        r = q;
    }
    out[i] = a[src];
}

// Pad (op 0 constant fa, 1 reflect, 2 edge): input dims in sa, begin pads in sb (negative crops).
@compute @workgroup_size(FLAT_THREADS)
fn pad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    var r = i;
    var src = 0i;
    var step = 1i;
    var inside = true;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let size = dim(u32(d));
        let q = r / size;
        let o = i32(r - q * size);
        r = q;
        let n = stride_a(u32(d));
        var j = o - stride_b(u32(d));
        if j < 0 || j >= n {
            if p.op == 0u {
                inside = false;
            } else if p.op == 2u {
                j = clamp(j, 0, n - 1);
            } else if n == 1 {
                j = 0;
            } else {
                let period = 2 * (n - 1);
                j = ((j % period) + period) % period;
                if j >= n {
                    j = period - j;
                }
            }
        }
        src += j * step;
        step *= n;
    }
    if inside {
        out[i] = a[src];
    } else {
        out[i] = p.fa;
    }
}

// Max (op 0) or average (op 1) pooling, one thread per output element; `flag`: average counts
// the padding (the window clipped to the padded input) instead of only the valid values.
@compute @workgroup_size(FLAT_THREADS)
fn pool(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    let h = i32(p.geo_in_out.x);
    let w = i32(p.geo_in_out.y);
    let oh = p.geo_in_out.z;
    let ow = p.geo_in_out.w;
    let ohw = oh * ow;
    let plane = i / ohw;
    let rest = i - plane * ohw;
    let oy = i32(rest / ow);
    let ox = i32(rest % ow);
    let kh = i32(p.geo_kernel_stride.x);
    let kw = i32(p.geo_kernel_stride.y);
    let ys = oy * i32(p.geo_kernel_stride.z) - i32(p.geo_dil_pad.z);
    let xs = ox * i32(p.geo_kernel_stride.w) - i32(p.geo_dil_pad.w);
    let dh = i32(p.geo_dil_pad.x);
    let dw = i32(p.geo_dil_pad.y);
    let base = plane * u32(h * w);
    var best = -3.4028235e38;
    var any = false;
    var sum = 0.0;
    var count = 0;
    for (var ki = 0; ki < kh; ki++) {
        let y = ys + ki * dh;
        if y < 0 || y >= h {
            continue;
        }
        for (var kj = 0; kj < kw; kj++) {
            let x = xs + kj * dw;
            if x < 0 || x >= w {
                continue;
            }
            let v = a[base + u32(y * w + x)];
            if !any || v > best {
                best = v;
            }
            any = true;
            sum += v;
            count += 1;
        }
    }
    if p.op == 0u {
        // A window with no valid value (impossible with pads smaller than the kernel).
        out[i] = best;
    } else {
        var divisor = max(count, 1);
        if p.flag != 0u {
            let ye = min(ys + kh, h + i32(p.geo_pad_end.x));
            let xe = min(xs + kw, w + i32(p.geo_pad_end.y));
            divisor = max((ye - ys) * (xe - xs), 1);
        }
        out[i] = sum / f32(divisor);
    }
}

// Mean of each plane of `len` values (one thread per plane).
@compute @workgroup_size(FLAT_THREADS)
fn global_average(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    var sum = 0.0;
    let base = i * p.len;
    for (var j = 0u; j < p.len; j++) {
        sum += a[base + j];
    }
    out[i] = sum / f32(p.len);
}

// Depthwise conv (groups = channels = output channels), one thread per output element: weights
// b[c·kh·kw + k], then the bias b[channels·kh·kw + c] when `flag` is set.
@compute @workgroup_size(FLAT_THREADS)
fn depthwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    let h = i32(p.geo_in_out.x);
    let w = i32(p.geo_in_out.y);
    let oh = p.geo_in_out.z;
    let ow = p.geo_in_out.w;
    let ohw = oh * ow;
    let plane = i / ohw;
    let c = plane % p.channels;
    let rest = i - plane * ohw;
    let oy = i32(rest / ow);
    let ox = i32(rest % ow);
    let kh = i32(p.geo_kernel_stride.x);
    let kw = i32(p.geo_kernel_stride.y);
    let ys = oy * i32(p.geo_kernel_stride.z) - i32(p.geo_dil_pad.z);
    let xs = ox * i32(p.geo_kernel_stride.w) - i32(p.geo_dil_pad.w);
    let dh = i32(p.geo_dil_pad.x);
    let dw = i32(p.geo_dil_pad.y);
    let base = plane * u32(h * w);
    let wbase = c * u32(kh * kw);
    var sum = 0.0;
    for (var ki = 0; ki < kh; ki++) {
        let y = ys + ki * dh;
        if y < 0 || y >= h {
            continue;
        }
        for (var kj = 0; kj < kw; kj++) {
            let x = xs + kj * dw;
            if x < 0 || x >= w {
                continue;
            }
            sum += a[base + u32(y * w + x)] * b[wbase + u32(ki * kw + kj)];
        }
    }
    if p.flag != 0u {
        sum += b[p.channels * u32(kh * kw) + c];
    }
    out[i] = sum;
}

// Softmax over groups (one thread per group): group i = (o, j) of outer × inner, values at
// o·len·inner + k·inner + j for k < len.
@compute @workgroup_size(FLAT_THREADS)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    let base = group_base(i);
    var m = a[base];
    for (var k = 1u; k < p.len; k++) {
        m = max(m, a[base + k * p.inner]);
    }
    var sum = 0.0;
    for (var k = 0u; k < p.len; k++) {
        let e = exp(a[base + k * p.inner] - m);
        out[base + k * p.inner] = e;
        sum += e;
    }
    for (var k = 0u; k < p.len; k++) {
        out[base + k * p.inner] = out[base + k * p.inner] / sum;
    }
}

// One part of a Concat: out[o·len + offset + j] = a[o·inner + j] for j < inner.
@compute @workgroup_size(FLAT_THREADS)
fn copy_into(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    let o = i / p.inner;
    let j = i - o * p.inner;
    out[o * p.len + u32(p.offset) + j] = a[i];
}

// Reduction (op 0 mean, 1 max, 2 sum) of the middle axis of outer × len × inner, one thread per
// (o, j) of outer × inner: out[o·inner + j] over a[(o·len + k)·inner + j], k < len. GlobalMaxPool
// is op 1 with inner = 1.
@compute @workgroup_size(FLAT_THREADS)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    let base = group_base(i);
    var best = -3.4028235e38;
    var sum = 0.0;
    for (var k = 0u; k < p.len; k++) {
        let v = a[base + k * p.inner];
        best = max(best, v);
        sum += v;
    }
    switch p.op {
        case 0u: { out[i] = sum / f32(p.len); }
        case 1u: { out[i] = best; }
        default: { out[i] = sum; }
    }
}

// LRN across `channels` (inner values each): out = a / (fc + fa / len · Σ a²)^fb over the `len`
// channels around c (⌊(len − 1)/2⌋ before, ⌈(len − 1)/2⌉ after, clipped to the tensor).
@compute @workgroup_size(FLAT_THREADS)
fn lrn(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    let plane = i / p.inner;
    let j = i - plane * p.inner;
    let c = i32(plane % p.channels);
    let image_base = (plane - u32(c)) * p.inner + j;
    let lo = max(c - i32((p.len - 1u) / 2u), 0);
    let hi = min(c + i32(p.len / 2u), i32(p.channels) - 1);
    var sq = 0.0;
    for (var k = lo; k <= hi; k++) {
        let v = a[image_base + u32(k) * p.inner];
        sq += v * v;
    }
    out[i] = a[i] / pow(p.fc + p.fa / f32(p.len) * sq, p.fb);
}

// The source coordinate of output pixel x (coordinate mode `flag`: 0 half_pixel,
// 1 pytorch_half_pixel, 2 align_corners, 3 asymmetric), as `exec::kernels_nchw`.
fn source_coordinate(x: u32, scale: f32, input: u32, output: u32) -> f32 {
    let xf = f32(x);
    switch p.flag {
        case 0u: { return (xf + 0.5) / scale - 0.5; }
        case 1u: { return select(0.0, (xf + 0.5) / scale - 0.5, output > 1u); }
        case 2u: { return select(0.0, xf * f32(input - 1u) / f32(output - 1u), output > 1u); }
        default: { return xf / scale; }
    }
}

// Nearest index (rounding `channels`: 0 round_prefer_floor, 1 round_prefer_ceil, 2 floor,
// 3 ceil), clamped to the input.
fn nearest(s: f32, input: u32) -> u32 {
    var r: f32;
    switch p.channels {
        case 0u: { r = select(round_half_up(s), floor(s), fract(s) == 0.5); }
        case 1u: { r = round_half_up(s); }
        case 2u: { r = floor(s); }
        default: { r = ceil(s); }
    }
    return min(u32(max(r, 0.0)), input - 1u);
}

// Rust's f32::round: halves away from zero (WGSL's round goes to even).
fn round_half_up(s: f32) -> f32 {
    return sign(s) * floor(abs(s) + 0.5);
}

// Resize of the planes of a (h × w in geo_in_out.xy) to oh × ow (geo_in_out.zw): op 0 nearest,
// 1 bilinear; scales (rows, columns) in fa, fb. One thread per output element.
@compute @workgroup_size(FLAT_THREADS)
fn resize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    let px = out_pixel(i);
    let h = p.geo_in_out.x;
    let w = p.geo_in_out.y;
    let sy = source_coordinate(px.y, p.fa, h, p.geo_in_out.z);
    let sx = source_coordinate(px.z, p.fb, w, p.geo_in_out.w);
    let base = px.x * h * w;
    if p.op == 0u {
        out[i] = a[base + nearest(sy, h) * w + nearest(sx, w)];
        return;
    }
    let cy = clamp(sy, 0.0, f32(h - 1u));
    let cx = clamp(sx, 0.0, f32(w - 1u));
    let y0 = min(u32(cy), h - 1u);
    let x0 = min(u32(cx), w - 1u);
    let y1 = min(y0 + 1u, h - 1u);
    let x1 = min(x0 + 1u, w - 1u);
    let fy = cy - f32(y0);
    let fx = cx - f32(x0);
    let top = a[base + y0 * w + x0] * (1.0 - fx) + a[base + y0 * w + x1] * fx;
    let bottom = a[base + y1 * w + x0] * (1.0 - fx) + a[base + y1 * w + x1] * fx;
    out[i] = top * (1.0 - fy) + bottom * fy;
}

// Transposed conv, one thread per output element (n, m, oy, ox): input channels `channels`,
// output channels `inner`, groups `len`; b holds the (C, M/group, kh, kw) weights then, with
// `flag`, the bias. Geometry as the pools: input, output, kernel, strides, dilations, pads.
@compute @workgroup_size(FLAT_THREADS)
fn conv_transpose(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if i >= p.count {
        return;
    }
    let px = out_pixel(i);
    let oy = i32(px.y);
    let ox = i32(px.z);
    let m = px.x % p.inner;
    let image = px.x / p.inner;
    let h = i32(p.geo_in_out.x);
    let w = i32(p.geo_in_out.y);
    let kh = i32(p.geo_kernel_stride.x);
    let kw = i32(p.geo_kernel_stride.y);
    let sh = i32(p.geo_kernel_stride.z);
    let sw = i32(p.geo_kernel_stride.w);
    let mg = p.inner / p.len;
    let cg = p.channels / p.len;
    let g = m / mg;
    let ml = m - g * mg;
    var sum = 0.0;
    if p.flag != 0u {
        sum = b[p.channels * mg * u32(kh * kw) + m];
    }
    for (var ky = 0; ky < kh; ky++) {
        let ty = oy + i32(p.geo_dil_pad.z) - ky * i32(p.geo_dil_pad.x);
        if ty < 0 || ty % sh != 0 || ty / sh >= h {
            continue;
        }
        for (var kx = 0; kx < kw; kx++) {
            let tx = ox + i32(p.geo_dil_pad.w) - kx * i32(p.geo_dil_pad.y);
            if tx < 0 || tx % sw != 0 || tx / sw >= w {
                continue;
            }
            let pixel = u32((ty / sh) * w + tx / sw);
            for (var c = g * cg; c < (g + 1u) * cg; c++) {
                let xv = a[(image * p.channels + c) * u32(h * w) + pixel];
                sum += xv * b[((c * mg + ml) * u32(kh) + u32(ky)) * u32(kw) + u32(kx)];
            }
        }
    }
    out[i] = sum;
}
