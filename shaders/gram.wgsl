// The tiled matmul core and the Gram statistics built on it (docs/ALGORITHM.md §2).
//
// `gram_tile` computes `acc += Lᵀ R` over one chunk of rows: L is rows × out_rows, R is
// rows × out_cols, the result out_rows × out_cols. It serves two kinds of operands:
// * conv (`p.conv = 1`): L and R are the unfolded consumer inputs (B and B for `BᵀB`, A and B for
//   the cross sum `AᵀB`, A and A for `AᵀA`), never materialized: element (row, col) is read
//   straight from the uploaded (n, C, H, W) batch (implicit im2col) through two small tables the
//   host builds, so that the k-loop has no integer division:
//     row = img·positions + pos,  col = (c·kh + i)·kw + j,
//     columns[col]   = (c·H·W, i·dil_h, j·dil_w),   offsets[pos] = (oy·stride_h − pad_h, ox·stride_w − pad_w),
//     value = x[img·image_len + c·H·W + y·W + x] with y = offsets.y + dy, x = offsets.x + dx, 0 outside.
// * dense (`p.conv = 0`): row r of L is `left[r·left_stride ..]`, of R `right[r·right_stride ..]`:
//   Linear and Conv → Flatten → Linear consumers (one image per row, D values), and the products
//   `C0 = X·W` (L = AᵀB or BᵀB as a full f32 matrix, R = W) computed where the sums live.
//
// Work split: workgroup (x, y) owns the TILE × TILE output tile (rows y·TILE.., columns
// col0 + x·TILE..), workgroup z one row split of the chunk (split-K, so that a small D still fills
// the GPU). TILE = 8·WG with WG × WG threads, each owning an 8 × 8 register block (two 4 × 4 quads
// per axis, 4·WG apart, so that workgroup-memory reads are conflict-free vec4 loads). Rows are
// staged BK at a time in two workgroup-memory stages (k-major, each staged row padded by one vec4
// against bank conflicts on the stores): while one stage is multiplied, the next one's values are
// fetched from global memory into registers and stored into the other stage, so one barrier per
// stage suffices.
//
// Precision: every FOLD_ROWS rows (and at the end of its split) a thread folds its f32 block into
// its split's slice of `acc` as a compensated pair (hi, lo) with an error-free TwoSum, so the f32
// error does not grow with the number of chunks or batches. `fold_splits` adds the slices in a
// fixed order (deterministic; no atomics); `to_full` writes hi + lo as one f32 matrix (mirrored
// for a symmetric sum), which is what the host reads back and what `C0 = X·W` multiplies.
//
// For a symmetric sum (`BᵀB`, `AᵀA`) tiles strictly below the diagonal are skipped and lower
// entries are not written: only the upper triangle of `acc` is valid.

// Threads per workgroup axis (pipeline-overridable; the tile edge is 8·WG).
override WG: u32 = 16u;
// Rows per staged step (pipeline-overridable; a divisor of FOLD_ROWS and of WG·WG).
override BK: u32 = 16u;
// Largest number of values one thread stages per operand and step (8·BK / WG).
const MAX_LOADS: u32 = 16u;
// Rows summed in registers before a compensated fold into `acc` (a multiple of BK).
const FOLD_ROWS: u32 = 4096u;
// Marks an element outside the chunk or in the padding (reads as 0).
const OUTSIDE: u32 = 0xffffffffu;
// Threads per workgroup of the element-wise passes (`fold_splits`, `to_full`).
const FLAT_THREADS: u32 = 256u;

struct GramParams {
    // Rows of L and R in this chunk (unfolded rows, or the k extent of a dense product).
    rows: u32,
    // Rows of the result (columns of L), and columns of the whole result (columns of R).
    out_rows: u32,
    out_cols: u32,
    // First output column of this block, and its width.
    col0: u32,
    block_cols: u32,
    // Row splits (workgroups along z) and rows per split (a multiple of BK).
    splits: u32,
    rows_per_split: u32,
    // 1: L = R (BᵀB or AᵀA), only the upper triangle is computed.
    symmetric: u32,
    // 1: the operands hold f16 values packed two per u32 (low half first); 0: f32 bit patterns.
    half_inputs: u32,
    // 1: conv consumer (implicit im2col through the tables); 0: dense rows.
    conv: u32,
    // Dense: values per row of L and of R.
    left_stride: u32,
    right_stride: u32,
    // Conv: values per image, output positions per image, input plane (H, W).
    image_len: u32,
    positions: u32,
    height: u32,
    width: u32,
    // Always 0. OR-ed into intermediate results of the compensated sums (`opaque`), so that the
    // driver's compiler, which may reassociate float arithmetic (Mesa's NIR does; SPIR-V ops carry
    // no NoContraction from naga), cannot prove `(s - a) - s` and friends to be zero and delete
    // the compensation.
    zero: u32,
}

@group(0) @binding(0) var<uniform> p: GramParams;
// Left operand L: (n, C, H, W) or rows × left_stride, row-major, f32 bit patterns or f16 pairs.
@group(0) @binding(1) var<storage, read> left: array<u32>;
// Right operand R, same layouts (may be the same buffer as `left`).
@group(0) @binding(2) var<storage, read> right: array<u32>;
// Accumulator of this column block: `splits` slices, each out_rows × block_cols, row-major;
// element (row, col) of slice z is acc[(z·out_rows + row)·block_cols + col − col0] = (hi, lo).
@group(0) @binding(3) var<storage, read_write> acc: array<vec2<f32>>;
// Conv column table: (plane offset c·H·W, dy, dx, unused) per unfolded column.
@group(0) @binding(4) var<storage, read> columns: array<vec4<i32>>;
// Conv position table: (oy·stride_h − pad_h, ox·stride_w − pad_w) per output position.
@group(0) @binding(5) var<storage, read> offsets: array<vec2<i32>>;
// `to_full`'s output: out_rows × out_cols f32, row-major (the whole result, one column block).
@group(0) @binding(6) var<storage, read_write> full: array<f32>;

// Two stages of BK staged rows each; row k of stage s starts at vec4 (s·BK + k)·(2·WG + 1) and
// its vec4 q holds tile columns 4q .. 4q + 3.
var<workgroup> left_tile: array<vec4<f32>, 2u * BK * (2u * WG + 1u)>;
var<workgroup> right_tile: array<vec4<f32>, 2u * BK * (2u * WG + 1u)>;

// Values fetched for the next stage (index e: see `stage_slot`).
var<private> left_next: array<f32, MAX_LOADS>;
var<private> right_next: array<f32, MAX_LOADS>;

// Where this thread's staged rows come from. Conv: one row per thread (k = lid % BK), tracked
// incrementally across stages; dense: one column per thread, rows k_first + e·k_step.
var<private> k_first: u32;
var<private> k_step: u32;
var<private> col_first: u32;
var<private> col_step: u32;
// Conv cursor of this thread's current row: image offset, output position, row index.
var<private> cur_base: u32;
var<private> cur_pos: u32;
var<private> cur_row: u32;

fn fetch_left(idx: u32) -> f32 {
    if idx == OUTSIDE {
        return 0.0;
    }
    if p.half_inputs != 0u {
        let pair = unpack2x16float(left[idx >> 1u]);
        return select(pair.x, pair.y, (idx & 1u) == 1u);
    }
    return bitcast<f32>(left[idx]);
}

fn fetch_right(idx: u32) -> f32 {
    if idx == OUTSIDE {
        return 0.0;
    }
    if p.half_inputs != 0u {
        let pair = unpack2x16float(right[idx >> 1u]);
        return select(pair.x, pair.y, (idx & 1u) == 1u);
    }
    return bitcast<f32>(right[idx]);
}

// Flat index of unfolded column `col` at the conv cursor, or OUTSIDE (padding).
fn conv_index(col: u32) -> u32 {
    let c = columns[col];
    let o = offsets[cur_pos];
    let y = o.x + c.y;
    let x = o.y + c.z;
    if y < 0 || x < 0 || y >= i32(p.height) || x >= i32(p.width) {
        return OUTSIDE;
    }
    return cur_base + u32(c.x) + u32(y) * p.width + u32(x);
}

// Moves the conv cursor `BK` rows on (no division: positions ≥ BK needs one subtraction).
fn advance_cursor() {
    cur_row += BK;
    cur_pos += BK;
    while cur_pos >= p.positions {
        cur_pos -= p.positions;
        cur_base += p.image_len;
    }
}

// Fetches the stage starting at `row0` into registers. L columns from i0 (limit out_rows), R
// columns from j0 (limit col_end).
fn load_stage(row0: u32, end: u32, i0: u32, j0: u32, col_end: u32, loads: u32) {
    if p.conv != 0u {
        let valid_row = cur_row < end;
        for (var e = 0u; e < loads; e++) {
            let col = col_first + e * col_step;
            var l = OUTSIDE;
            var r = OUTSIDE;
            if valid_row && i0 + col < p.out_rows {
                l = conv_index(i0 + col);
            }
            if valid_row && j0 + col < col_end {
                r = conv_index(j0 + col);
            }
            left_next[e] = fetch_left(l);
            right_next[e] = fetch_right(r);
        }
        advance_cursor();
    } else {
        for (var e = 0u; e < loads; e++) {
            let row = row0 + k_first + e * k_step;
            var l = OUTSIDE;
            var r = OUTSIDE;
            if row < end && i0 + col_first < p.out_rows {
                l = row * p.left_stride + i0 + col_first;
            }
            if row < end && j0 + col_first < col_end {
                r = row * p.right_stride + j0 + col_first;
            }
            left_next[e] = fetch_left(l);
            right_next[e] = fetch_right(r);
        }
    }
}

// Writes the fetched values into stage `s` of workgroup memory.
fn store_stage(s: u32, loads: u32) {
    let stride = 2u * WG + 1u;
    for (var e = 0u; e < loads; e++) {
        let k = k_first + e * k_step;
        let col = col_first + e * col_step;
        let slot = (s * BK + k) * stride + col / 4u;
        left_tile[slot][col % 4u] = left_next[e];
        right_tile[slot][col % 4u] = right_next[e];
    }
}

// `v`, unchanged, in a form the compiler cannot see through (see `GramParams.zero`).
fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) | p.zero);
}

// a + b = s + err exactly (Knuth's TwoSum), every intermediate made opaque so that no
// algebraic simplification can turn `err` into 0.
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = opaque(a + b);
    let bp = opaque(s - a);
    let ap = opaque(s - bp);
    return vec2<f32>(s, (a - ap) + (b - bp));
}

// (hi, lo) + x without rounding error in hi + lo.
fn two_sum_add(pair: vec2<f32>, x: f32) -> vec2<f32> {
    let t = two_sum(pair.x, x);
    return vec2<f32>(t.x, pair.y + t.y);
}

// Adds four consecutive output values (row, col..col+3) into slice z of the accumulator.
fn fold_quad(z: u32, row: u32, col: u32, v: vec4<f32>) {
    if row >= p.out_rows {
        return;
    }
    let col_end = p.col0 + p.block_cols;
    for (var f = 0u; f < 4u; f++) {
        let c = col + f;
        if c < col_end && !(p.symmetric != 0u && row > c) {
            let idx = (z * p.out_rows + row) * p.block_cols + (c - p.col0);
            acc[idx] = two_sum_add(acc[idx], v[f]);
        }
    }
}

@compute @workgroup_size(WG * WG)
fn gram_tile(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile = 8u * WG;
    let threads = WG * WG;
    let stride = 2u * WG + 1u;
    let loads = 8u * BK / WG;
    let i0 = wg.y * tile;
    let j0 = p.col0 + wg.x * tile;
    let col_end = p.col0 + p.block_cols;
    if p.symmetric != 0u && i0 >= j0 + tile {
        return; // Strictly below the diagonal.
    }
    let first = wg.z * p.rows_per_split;
    let end = min(p.rows, first + p.rows_per_split);
    if first >= end {
        return;
    }
    let tx = lid % WG;
    let ty = lid / WG;
    if p.conv != 0u {
        // Consecutive threads take consecutive rows (adjacent output positions are adjacent in
        // memory), each thread one row and `loads` columns.
        k_first = lid % BK;
        k_step = 0u;
        col_first = lid / BK;
        col_step = threads / BK;
        cur_row = first + k_first;
        let img = cur_row / p.positions;
        cur_pos = cur_row % p.positions;
        cur_base = img * p.image_len;
    } else {
        // Consecutive threads take consecutive columns (a row is contiguous in memory).
        col_first = lid % tile;
        col_step = 0u;
        k_first = lid / tile;
        k_step = threads / tile;
    }

    // c[4a + e][b]: rows i0 + 4·WG·a + 4ty + e, columns j0 + 4·WG·b + 4tx .. + 3.
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

    load_stage(first, end, i0, j0, col_end, loads);
    store_stage(0u, loads);
    workgroupBarrier();
    var s = 0u;
    for (var row0 = first; row0 < end; row0 += BK) {
        let next = row0 + BK;
        let more = next < end;
        if more {
            load_stage(next, end, i0, j0, col_end, loads);
        }
        let base = s * BK * stride;
        for (var k = 0u; k < BK; k++) {
            let at = base + k * stride;
            let a0 = left_tile[at + ty];
            let a1 = left_tile[at + WG + ty];
            let b0 = right_tile[at + tx];
            let b1 = right_tile[at + WG + tx];
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
            store_stage(1u - s, loads);
        }
        if (next - first) % FOLD_ROWS == 0u || !more {
            let r0 = i0 + 4u * ty;
            let r1 = i0 + 4u * WG + 4u * ty;
            let q0 = j0 + 4u * tx;
            let q1 = j0 + 4u * WG + 4u * tx;
            fold_quad(wg.z, r0, q0, c00);
            fold_quad(wg.z, r0, q1, c01);
            fold_quad(wg.z, r0 + 1u, q0, c10);
            fold_quad(wg.z, r0 + 1u, q1, c11);
            fold_quad(wg.z, r0 + 2u, q0, c20);
            fold_quad(wg.z, r0 + 2u, q1, c21);
            fold_quad(wg.z, r0 + 3u, q0, c30);
            fold_quad(wg.z, r0 + 3u, q1, c31);
            fold_quad(wg.z, r1, q0, c40);
            fold_quad(wg.z, r1, q1, c41);
            fold_quad(wg.z, r1 + 1u, q0, c50);
            fold_quad(wg.z, r1 + 1u, q1, c51);
            fold_quad(wg.z, r1 + 2u, q0, c60);
            fold_quad(wg.z, r1 + 2u, q1, c61);
            fold_quad(wg.z, r1 + 3u, q0, c70);
            fold_quad(wg.z, r1 + 3u, q1, c71);
            c00 = vec4<f32>(0.0);
            c01 = vec4<f32>(0.0);
            c10 = vec4<f32>(0.0);
            c11 = vec4<f32>(0.0);
            c20 = vec4<f32>(0.0);
            c21 = vec4<f32>(0.0);
            c30 = vec4<f32>(0.0);
            c31 = vec4<f32>(0.0);
            c40 = vec4<f32>(0.0);
            c41 = vec4<f32>(0.0);
            c50 = vec4<f32>(0.0);
            c51 = vec4<f32>(0.0);
            c60 = vec4<f32>(0.0);
            c61 = vec4<f32>(0.0);
            c70 = vec4<f32>(0.0);
            c71 = vec4<f32>(0.0);
        }
        workgroupBarrier();
        s = 1u - s;
    }
}

// (hi, lo) + (hi, lo), compensated.
fn pair_add(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let t = two_sum(a.x, b.x);
    return vec2<f32>(t.x, a.y + b.y + t.y);
}

// Index of this thread in a flat pass dispatched as a 2-D grid of workgroups.
fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * FLAT_THREADS;
}

// Adds slices 1..splits of the accumulator into slice 0, in order (one thread per element).
@compute @workgroup_size(FLAT_THREADS)
fn fold_splits(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let idx = flat_index(gid, groups);
    let n = p.out_rows * p.block_cols;
    if idx >= n {
        return;
    }
    var s = acc[idx];
    for (var z = 1u; z < p.splits; z++) {
        s = pair_add(s, acc[z * n + idx]);
    }
    acc[idx] = s;
}

// Writes slice 0 of the accumulator (one column block covering the whole result) as f32 hi + lo
// into `full`, mirroring the upper triangle of a symmetric sum.
@compute @workgroup_size(FLAT_THREADS)
fn to_full(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let idx = flat_index(gid, groups);
    if idx >= p.out_rows * p.block_cols {
        return;
    }
    let row = idx / p.block_cols;
    let col = p.col0 + idx % p.block_cols;
    let v = acc[idx];
    let value = v.x + v.y;
    if p.symmetric != 0u {
        if row <= col {
            full[row * p.out_cols + col] = value;
            full[col * p.out_cols + row] = value;
        }
    } else {
        full[row * p.out_cols + col] = value;
    }
}
