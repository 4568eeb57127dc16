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
    _pad0: u32,
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

// Unary ops: 0 Relu, 1 LeakyRelu(fa), 2 Clip(fa, fb), 3 Sigmoid, 4 HardSigmoid(fa, fb),
// 5 HardSwish, 6 copy.
fn unary_op(op: u32, v: f32) -> f32 {
    switch op {
        case 0u: { return max(v, 0.0); }
        case 1u: { return select(p.fa * v, v, v >= 0.0); }
        case 2u: { return min(max(v, p.fa), p.fb); }
        case 3u: { return 1.0 / (1.0 + exp(-v)); }
        case 4u: { return clamp(p.fa * v + p.fb, 0.0, 1.0); }
        case 5u: { return v * clamp(v / 6.0 + 0.5, 0.0, 1.0); }
        default: { return v; }
    }
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

// Broadcast binary op (0 Add, 1 Sub, 2 Mul, 3 Div): out[idx] = a[Σ idx·sa] ∘ b[Σ idx·sb].
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
    let o = i / p.inner;
    let j = i - o * p.inner;
    let base = o * p.len * p.inner + j;
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
