// The forward pass's GEMM: a convolution as an implicit GEMM, and dense products (Gemm, MatMul)
// as the same kernel with a 1 × 1 "image".
//
// Per group g (workgroup z), `out[img, g·m_g + m, pos] = epilogue(Σ_k W_g[k, m] · X_g[k, col])`
// over the GEMM columns col = img·positions + pos (this dispatch covers col0 .. col0 + cols):
// * W_g is the weight of group g, transposed on the host to K × m_g (k-major, so that a staged
//   row is contiguous): `weight[g·K·m_g + k·m_g + m]`.
// * X_g is the unfolded input of group g, never materialized (implicit im2col), read from the
//   input with its planes framed by the conv's zero padding (Hp × Wp; pad.wgsl writes that copy
//   first when the conv pads), through two tables the host builds once per node, so that a
//   read needs no border test and the k-loop no integer division:
//     columns[k]   = c·Hp·Wp + i·dil_h·Wp + j·dil_w    for k = (c·kh + i)·kw + j,
//     offsets[pos] = oy·stride_h·Wp + ox·stride_w,
//     value = x[img·image_len + g·group_len + offsets[pos] + columns[k]].
//   Dense mode (`p.dense = 1`): row img of X is `x[img·image_len + k]` (no tables).
// * epilogue: `act(acc · scale[m] + shift[m])` (bias, Gemm's alpha and a folded BatchNorm), with
//   `act` one of the unary ops of forward.wgsl (0: none).
//
// Built on the tiled matmul core of matmul.wgsl (the host compiles matmul.wgsl followed by this
// file): the core's A operand is W_g (TILE_M = 8·WM output channels), its B operand X_g (TILE_N =
// 8·WN columns), k the reduction over K.
//
// Work split: workgroup (x, y) owns an output tile of TILE_M output channels × TILE_N columns;
// WM × WN threads, each an 8 × 8 register block of the core. With WM = 4 (a 32-channel tile for
// narrow layers) there are half as many threads as tile columns, and each thread stages two input
// columns.
//
// Split-K (`p.splits` > 1, for products with few tiles and a long K): workgroup z is
// (group, slice), slice s sums K rows s·k_split .. (s + 1)·k_split and writes its raw sums to
// slice s of `out` (each slice laid out like the output); `reduce_splits` then adds the slices in
// order (deterministic) and applies the epilogue.

// The core's overrides: WM (threads along the output-channel axis: 4, 8 or 16; TILE_M = 8·WM),
// WN (threads along the column axis: 8 or 16; TILE_N = 8·WN), BK (K rows per staged step: 8 or
// 16, at most 2·min(WM, WN)).
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
    // Input values per (padded) image, and per group of input channels.
    image_len: u32,
    group_len: u32,
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
// The im2col tables (one dummy entry in dense mode): offsets in the padded input.
@group(0) @binding(5) var<storage, read> columns: array<u32>;
@group(0) @binding(6) var<storage, read> offsets: array<u32>;

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
var<private> x_off: array<u32, MAX_COLUMNS>;
var<private> x_valid: array<bool, MAX_COLUMNS>;
// End of this workgroup's K range, where its group's weights start, and its first channel.
var<private> k_end: u32;
var<private> w_base: u32;
var<private> m0: u32;

fn input_at(j: u32, k: u32) -> f32 {
    if !x_valid[j] || k >= k_end {
        return 0.0;
    }
    if p.dense != 0u {
        return x[x_base[j] + k];
    }
    return x[x_base[j] + x_off[j] + columns[k]];
}

// Fetches K rows k0 .. k0 + BK of this thread's share into registers (the core's `load_stage`).
fn load_stage(k0: u32) {
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

// Writes the fetched values into stage `s` (the core's `store_stage`).
fn store_stage(s: u32) {
    let wl = 8u * BK / WN;
    for (var e = 0u; e < wl; e++) {
        store_a(s, wk0 + e * wk_step, wm, w_next[e]);
    }
    for (var j = 0u; j < x_cols; j++) {
        let col = xc + j * WM * WN;
        for (var e = 0u; e < x_rows; e++) {
            store_b(s, xk0 + e * xk_step, col, x_next[j * x_rows + e]);
        }
    }
}

// Nothing to do between stages: the block is written once, at the end (the core's `stage_done`).
fn stage_done(block: ptr<function, Block>, rows: u32, last: bool) {}

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
    m0 = wg.y * tile_m;
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
        x_off[j] = 0u;
        if x_valid[j] && p.dense == 0u {
            x_off[j] = offsets[pos];
        }
    }
    w_base = g * p.k * p.m_group;

    var block = Block();
    multiply_range(&block, k_begin, k_hi, tx, ty);

    write_quad(g, slice, m0 + block_row(0u, ty), n0 + block_col(0u, tx), block[0]);
    write_quad(g, slice, m0 + block_row(0u, ty), n0 + block_col(1u, tx), block[1]);
    write_quad(g, slice, m0 + block_row(1u, ty), n0 + block_col(0u, tx), block[2]);
    write_quad(g, slice, m0 + block_row(1u, ty), n0 + block_col(1u, tx), block[3]);
    write_quad(g, slice, m0 + block_row(2u, ty), n0 + block_col(0u, tx), block[4]);
    write_quad(g, slice, m0 + block_row(2u, ty), n0 + block_col(1u, tx), block[5]);
    write_quad(g, slice, m0 + block_row(3u, ty), n0 + block_col(0u, tx), block[6]);
    write_quad(g, slice, m0 + block_row(3u, ty), n0 + block_col(1u, tx), block[7]);
    write_quad(g, slice, m0 + block_row(4u, ty), n0 + block_col(0u, tx), block[8]);
    write_quad(g, slice, m0 + block_row(4u, ty), n0 + block_col(1u, tx), block[9]);
    write_quad(g, slice, m0 + block_row(5u, ty), n0 + block_col(0u, tx), block[10]);
    write_quad(g, slice, m0 + block_row(5u, ty), n0 + block_col(1u, tx), block[11]);
    write_quad(g, slice, m0 + block_row(6u, ty), n0 + block_col(0u, tx), block[12]);
    write_quad(g, slice, m0 + block_row(6u, ty), n0 + block_col(1u, tx), block[13]);
    write_quad(g, slice, m0 + block_row(7u, ty), n0 + block_col(0u, tx), block[14]);
    write_quad(g, slice, m0 + block_row(7u, ty), n0 + block_col(1u, tx), block[15]);
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
