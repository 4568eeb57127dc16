// The forward pass's GEMM: a convolution as an implicit GEMM, and dense products (Gemm, MatMul)
// as the same kernel with a 1 × 1 "image".
//
// Per group g (workgroup z), `out[img, g·m_g + m, pos] = epilogue(Σ_k W_g[k, m] · X_g[k, col])`
// over the GEMM columns col = img·positions + pos (this dispatch covers col0 .. col0 + cols):
// * W_g is the weight of group g, transposed on the host to K × m_g (k-major, so that a staged
//   row is contiguous): `weight[g·K·m_g + k·m_g + m]`.
// * X_g is the unfolded input of group g, never materialized (implicit im2col), read through two
//   tables the host builds once per node, so that the k-loop has no integer division:
//     columns[k]   = (c·H·W, i·dil_h, j·dil_w)    for k = (c·kh + i)·kw + j,
//     offsets[pos] = (oy·stride_h − pad_top, ox·stride_w − pad_left),
//     value = x[img·image_len + g·group_len + c·H·W + y·W + x] with (y, x) = offsets + (dy, dx),
//     0 outside the input (padding).
//   Dense mode (`p.dense = 1`): row img of X is `x[img·image_len + k]` (no tables).
// * epilogue: `act(acc · scale[m] + shift[m])` (bias, Gemm's alpha and a folded BatchNorm), with
//   `act` one of the unary ops of forward.wgsl (0: none).
//
// Work split: workgroup (x, y) owns an output tile of TILE_M = 8·WM output channels × TILE_N =
// 8·WN columns; WM × WN threads, each an 8 × 8 register block (two 4 × 4 quads per axis, 4·WM
// and 4·WN apart, so that workgroup-memory reads are conflict-free vec4 loads). With WM = 4 (a
// 32-channel tile for narrow layers) there are half as many threads as tile columns, and each
// thread stages two input columns. K is staged BK
// rows at a time in two workgroup-memory stages (k-major, each staged row padded by one vec4):
// while one stage is multiplied, the next one is fetched into registers and then stored into the
// other stage, so one barrier per stage suffices (the scheme of gram.wgsl).
//
// Split-K (`p.splits` > 1, for products with few tiles and a long K): workgroup z is
// (group, slice), slice s sums K rows s·k_split .. (s + 1)·k_split and writes its raw sums to
// slice s of `out` (each slice laid out like the output); `reduce_splits` then adds the slices in
// order (deterministic) and applies the epilogue.

// Threads along the output-channel axis (pipeline-overridable: 4, 8 or 16; TILE_M = 8·WM).
override WM: u32 = 16u;
// Threads along the column axis (pipeline-overridable: 8 or 16; TILE_N = 8·WN).
override WN: u32 = 16u;
// K rows per staged step (pipeline-overridable: 8 or 16, at most 2·min(WM, WN)).
override BK: u32 = 16u;
// Largest number of values one thread stages per operand and step (8·BK / min(WM, WN)).
const MAX_LOADS: u32 = 16u;
// Most input columns one thread stages (2 when WM = 4).
const MAX_COLUMNS: u32 = 2u;

struct ConvParams {
    // GEMM columns of the whole batch (images · positions), and this dispatch's first column.
    total: u32,
    col0: u32,
    // Output positions per image (oh·ow; 1 in dense mode).
    positions: u32,
    // Output channels per group (GEMM rows) and in all (M).
    m_group: u32,
    m_total: u32,
    // Reduction length K = (C / groups)·kh·kw (dense: the input features).
    k: u32,
    // Input values per image, and per group of input channels.
    image_len: u32,
    group_len: u32,
    // Input plane.
    height: u32,
    width: u32,
    // 1: dense rows, no tables.
    dense: u32,
    // Epilogue activation (forward.wgsl's unary codes + 1; 0: none) and its two parameters.
    act: u32,
    act_a: f32,
    act_b: f32,
    // K slices (1: no split-K) and K rows per slice (a multiple of BK).
    splits: u32,
    k_split: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
// scale[0 .. M], then shift[M .. 2M].
@group(0) @binding(3) var<storage, read> epilogue: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> columns: array<vec4<i32>>;
@group(0) @binding(6) var<storage, read> offsets: array<vec2<i32>>;

var<workgroup> w_tile: array<vec4<f32>, 2u * BK * (2u * WM + 1u)>;
var<workgroup> x_tile: array<vec4<f32>, 2u * BK * (2u * WN + 1u)>;

var<private> w_next: array<f32, MAX_LOADS>;
var<private> x_next: array<f32, MAX_LOADS>;

// This thread's staging duties: weight column `wm` at rows wk0 + e·wk_step; input columns
// xc + j·WM·WN (j < x_cols) at rows xk0 + e·xk_step (x_rows of them).
var<private> wm: u32;
var<private> wk0: u32;
var<private> wk_step: u32;
var<private> xc: u32;
var<private> xk0: u32;
var<private> xk_step: u32;
var<private> x_cols: u32;
var<private> x_rows: u32;
// Per staged input column: image base (with the group offset), output offset, validity.
var<private> x_base: array<u32, MAX_COLUMNS>;
var<private> x_off: array<vec2<i32>, MAX_COLUMNS>;
var<private> x_valid: array<bool, MAX_COLUMNS>;
// End of this workgroup's K range.
var<private> k_end: u32;

fn input_at(j: u32, k: u32) -> f32 {
    if !x_valid[j] || k >= k_end {
        return 0.0;
    }
    if p.dense != 0u {
        return x[x_base[j] + k];
    }
    let c = columns[k];
    let o = x_off[j];
    let y = o.x + c.y;
    let xx = o.y + c.z;
    if y < 0 || xx < 0 || y >= i32(p.height) || xx >= i32(p.width) {
        return 0.0;
    }
    return x[x_base[j] + u32(c.x) + u32(y) * p.width + u32(xx)];
}

fn load_stage(k0: u32, w_base: u32, m0: u32) {
    let wl = 8u * BK / WN;
    for (var e = 0u; e < wl; e++) {
        let k = k0 + wk0 + e * wk_step;
        let m = m0 + wm;
        var v = 0.0;
        if k < k_end && m < p.m_group {
            v = weight[w_base + k * p.m_group + m];
        }
        w_next[e] = v;
    }
    for (var j = 0u; j < x_cols; j++) {
        for (var e = 0u; e < x_rows; e++) {
            x_next[j * x_rows + e] = input_at(j, k0 + xk0 + e * xk_step);
        }
    }
}

fn store_stage(s: u32) {
    let wl = 8u * BK / WN;
    let ws = 2u * WM + 1u;
    let xs = 2u * WN + 1u;
    for (var e = 0u; e < wl; e++) {
        let k = wk0 + e * wk_step;
        w_tile[(s * BK + k) * ws + wm / 4u][wm % 4u] = w_next[e];
    }
    for (var j = 0u; j < x_cols; j++) {
        let col = xc + j * WM * WN;
        for (var e = 0u; e < x_rows; e++) {
            let k = xk0 + e * xk_step;
            x_tile[(s * BK + k) * xs + col / 4u][col % 4u] = x_next[j * x_rows + e];
        }
    }
}

// forward.wgsl's unary ops, shifted by one (0: identity).
fn activate(v: f32) -> f32 {
    switch p.act {
        case 1u: { return max(v, 0.0); }
        case 2u: { return select(p.act_a * v, v, v >= 0.0); }
        case 3u: { return min(max(v, p.act_a), p.act_b); }
        case 4u: { return 1.0 / (1.0 + exp(-v)); }
        case 5u: { return clamp(p.act_a * v + p.act_b, 0.0, 1.0); }
        case 6u: { return v * clamp(v / 6.0 + 0.5, 0.0, 1.0); }
        default: { return v; }
    }
}

// Writes one row (output channel) × four consecutive columns through the epilogue, or raw into
// K slice `slice` under split-K.
fn write_quad(g: u32, slice: u32, row: u32, col: u32, v: vec4<f32>) {
    if row >= p.m_group {
        return;
    }
    let m = g * p.m_group + row;
    let scale = epilogue[m];
    let shift = epilogue[p.m_total + m];
    let slice_base = slice * p.total * p.m_total;
    for (var f = 0u; f < 4u; f++) {
        let c = col + f;
        if c < p.total {
            let img = c / p.positions;
            let pos = c - img * p.positions;
            let at = (img * p.m_total + m) * p.positions + pos;
            if p.splits > 1u {
                out[slice_base + at] = v[f];
            } else {
                out[at] = activate(v[f] * scale + shift);
            }
        }
    }
}

@compute @workgroup_size(WM * WN)
fn conv_gemm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile_m = 8u * WM;
    let tile_n = 8u * WN;
    let threads = WM * WN;
    let g = wg.z / p.splits;
    let slice = wg.z - g * p.splits;
    let k_begin = slice * p.k_split;
    let k_hi = min(p.k, k_begin + p.k_split);
    k_end = k_hi;
    let m0 = wg.y * tile_m;
    let n0 = p.col0 + wg.x * tile_n;
    let tx = lid % WN;
    let ty = lid / WN;

    // Weight staging: consecutive threads take consecutive channels (contiguous in W_gᵀ).
    wm = lid % tile_m;
    wk0 = lid / tile_m;
    wk_step = threads / tile_m;
    // Input staging: consecutive threads take consecutive columns (adjacent positions).
    if threads >= tile_n {
        xc = lid % tile_n;
        xk0 = lid / tile_n;
        xk_step = threads / tile_n;
        x_cols = 1u;
        x_rows = BK / xk_step;
    } else {
        xc = lid;
        xk0 = 0u;
        xk_step = 1u;
        x_cols = min(tile_n / threads, MAX_COLUMNS);
        x_rows = BK;
    }
    for (var j = 0u; j < x_cols; j++) {
        let col = n0 + xc + j * threads;
        x_valid[j] = col < p.total;
        let img = col / max(p.positions, 1u);
        let pos = col - img * p.positions;
        x_base[j] = img * p.image_len + g * p.group_len;
        x_off[j] = vec2<i32>(0, 0);
        if x_valid[j] && p.dense == 0u {
            x_off[j] = offsets[pos];
        }
    }
    let w_base = g * p.k * p.m_group;

    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);

    let ws = 2u * WM + 1u;
    let xs = 2u * WN + 1u;
    load_stage(k_begin, w_base, m0);
    store_stage(0u);
    workgroupBarrier();
    var s = 0u;
    for (var k0 = k_begin; k0 < k_hi; k0 += BK) {
        let next = k0 + BK;
        let more = next < k_hi;
        if more {
            load_stage(next, w_base, m0);
        }
        let wb = s * BK * ws;
        let xb = s * BK * xs;
        for (var k = 0u; k < BK; k++) {
            let a0 = w_tile[wb + k * ws + ty];
            let a1 = w_tile[wb + k * ws + WM + ty];
            let b0 = x_tile[xb + k * xs + tx];
            let b1 = x_tile[xb + k * xs + WN + tx];
            c00 += a0.x * b0;
            c01 += a0.x * b1;
            c10 += a0.y * b0;
            c11 += a0.y * b1;
            c20 += a0.z * b0;
            c21 += a0.z * b1;
            c30 += a0.w * b0;
            c31 += a0.w * b1;
            c40 += a1.x * b0;
            c41 += a1.x * b1;
            c50 += a1.y * b0;
            c51 += a1.y * b1;
            c60 += a1.z * b0;
            c61 += a1.z * b1;
            c70 += a1.w * b0;
            c71 += a1.w * b1;
        }
        if more {
            store_stage(1u - s);
        }
        workgroupBarrier();
        s = 1u - s;
    }

    let r0 = m0 + 4u * ty;
    let r1 = m0 + 4u * WM + 4u * ty;
    let q0 = n0 + 4u * tx;
    let q1 = n0 + 4u * WN + 4u * tx;
    write_quad(g, slice, r0, q0, c00);
    write_quad(g, slice, r0, q1, c01);
    write_quad(g, slice, r0 + 1u, q0, c10);
    write_quad(g, slice, r0 + 1u, q1, c11);
    write_quad(g, slice, r0 + 2u, q0, c20);
    write_quad(g, slice, r0 + 2u, q1, c21);
    write_quad(g, slice, r0 + 3u, q0, c30);
    write_quad(g, slice, r0 + 3u, q1, c31);
    write_quad(g, slice, r1, q0, c40);
    write_quad(g, slice, r1, q1, c41);
    write_quad(g, slice, r1 + 1u, q0, c50);
    write_quad(g, slice, r1 + 1u, q1, c51);
    write_quad(g, slice, r1 + 2u, q0, c60);
    write_quad(g, slice, r1 + 2u, q1, c61);
    write_quad(g, slice, r1 + 3u, q0, c70);
    write_quad(g, slice, r1 + 3u, q1, c71);
}

// Split-K: out[i] = epilogue(Σ_s x[s·len + i]) over the `splits` slices in `x`, one thread per
// output element (len = total · m_total), dispatched as a 2-D grid of 256-thread workgroups.
@compute @workgroup_size(256)
fn reduce_splits(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * 256u;
    let len = p.total * p.m_total;
    if i >= len {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        sum += x[s * len + i];
    }
    let m = (i / p.positions) % p.m_total;
    out[i] = activate(sum * epilogue[m] + epilogue[p.m_total + m]);
}
