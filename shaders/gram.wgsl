// The Gram statistics (docs/ALGORITHM.md §2), built on the tiled matmul core of matmul.wgsl
// (the host compiles matmul.wgsl followed by this file).
//
// `gram_tile` computes `acc += Lᵀ R` over one chunk of rows: L is rows × out_rows, R is
// rows × out_cols, the result out_rows × out_cols. It serves two kinds of operands:
// * conv (`p.conv = 1`): L and R are the unfolded consumer inputs (B and B for `BᵀB`, A and B for
//   the cross sum `AᵀB`, A and A for `AᵀA`), never materialized: element (row, col) is read
//   straight from the (n, C, Hp, Wp) batch (implicit im2col), whose planes pad.wgsl has
//   surrounded by the conv's zero padding (the uploaded batch itself, Hp = H and Wp = W, for f32
//   inputs of a conv that does not pad), so that a read needs no border test and the k-loop no
//   integer division. Two tables the host builds give the offsets:
//     row = img·positions + pos,  col = (c·kh + i)·kw + j,
//     columns[col]  = c·Hp·Wp + i·dil_h·Wp + j·dil_w,   offsets[pos] = oy·stride_h·Wp + ox·stride_w,
//     value = x[img·image_len + offsets[pos] + columns[col]].
//   A thread stages the same columns at every step, so it reads their offsets once.
// * dense (`p.conv = 0`): row r of L is `left[r·left_stride ..]`, of R `right[r·right_stride ..]`:
//   Linear and Conv → Flatten → Linear consumers (one image per row, D values), and the products
//   `C0 = X·W` (L = AᵀB or BᵀB as a full f32 matrix, R = W) computed where the sums live.
// * projection (`p.conv = 2`): `P = U(A)·W` for a chunk of the target's unfolded rows, the
//   consumer's forward without bias: L is U(A)ᵀ (D × rows, "rows" of the kernel are the D unfolded
//   columns k, the result rows are the unfolded rows r), R is W (D × m, row-major, right_stride
//   m). Element (k, r) of L is x[img(r)·image_len + offsets[pos(r)] + columns[k]]: a thread
//   stages the same result rows r at every step, so it divides once, up front. A dense consumer
//   uses identity tables (positions 1, columns[k] = k). The result, n_rows × m row-major, goes
//   through `to_full` to the f32 `P` the next two modes read.
// * projected cross (`p.conv = 3`): `Bᵀ P` (D × m): L the conv input as in mode 1, R = P dense
//   rows (`right[row·right_stride + col]`, row-ordered like the unfolded rows). `‖P‖²` is the
//   trace of `Pᵀ P`, a dense symmetric sum (mode 0) over the same rows.
// Either way the tile kernel reads f32 values: f16 uploads are widened by pad.wgsl first.
// Columns beyond the result (the last tile's) are read from the last valid column instead: they
// only feed block entries that are never folded, and every read stays inside the operands.

// Work split: workgroup (x, y) owns the TILE × TILE output tile (rows y·TILE.., columns
// col0 + x·TILE..), workgroup z one row split of the chunk (split-K, so that a small D still fills
// the GPU). The core's A operand is L and its B operand is R, with square tiles: the host sets
// WM = WN (TILE = 8·WM).
//
// Precision: every FOLD_ROWS rows (and at the end of its split) a thread folds its f32 block into
// its split's slice of `acc` as a compensated pair (hi, lo) with an error-free TwoSum, so the f32
// error does not grow with the number of chunks or batches. `fold_splits` adds the slices in a
// fixed order (deterministic; no atomics); `to_full` writes hi + lo as one f32 matrix (mirrored
// for a symmetric sum), which is what the host reads back and what `C0 = X·W` multiplies.
//
// For a symmetric sum (`BᵀB`, `AᵀA`) tiles strictly below the diagonal are skipped and lower
// entries are not written: only the upper triangle of `acc` is valid.

// The core's overrides: WM = WN = the tile configuration's WG (threads per workgroup axis; the
// tile edge is 8·WG), BK a divisor of FOLD_ROWS and of WG·WG.
// Largest number of values one thread stages per operand and step (8·BK / WG).
const MAX_LOADS: u32 = 16u;
// Rows summed in registers before a compensated fold into `acc` (a multiple of BK).
const FOLD_ROWS: u32 = 4096u;
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
    // 1: conv consumer (implicit im2col through the tables); 0: dense rows; 2: projection
    // `U(A)·W`; 3: conv L with dense-row R (`Bᵀ P`). See the top of the file.
    conv: u32,
    // Dense: values per row of L and of R.
    left_stride: u32,
    right_stride: u32,
    // Conv: values per padded image (what the tile kernel reads), output positions per image.
    image_len: u32,
    positions: u32,
    // Always 0. OR-ed into intermediate results of the compensated sums (`opaque`), so that the
    // driver's compiler, which may reassociate float arithmetic (Mesa's NIR does; SPIR-V ops carry
    // no NoContraction from naga), cannot prove `(s - a) - s` and friends to be zero and delete
    // the compensation.
    zero: u32,
}

@group(0) @binding(0) var<uniform> p: GramParams;
// Left operand L: (n, C, Hp, Wp) or rows × left_stride, row-major, f32 bit patterns.
@group(0) @binding(1) var<storage, read> left: array<u32>;
// Right operand R, same layouts (may be the same buffer as `left`).
@group(0) @binding(2) var<storage, read> right: array<u32>;
// Accumulator of this column block: `splits` slices, each out_rows × block_cols, row-major;
// element (row, col) of slice z is acc[(z·out_rows + row)·block_cols + col − col0] = (hi, lo).
@group(0) @binding(3) var<storage, read_write> acc: array<vec2<f32>>;
// Conv column table: operand offset c·Hp·Wp + i·dil_h·Wp + j·dil_w per unfolded column.
@group(0) @binding(4) var<storage, read> columns: array<u32>;
// Conv position table: operand offset oy·stride_h·Wp + ox·stride_w per output position.
@group(0) @binding(5) var<storage, read> offsets: array<u32>;
// `to_full`'s output: out_rows × out_cols f32, row-major (the whole result, one column block),
// then the diagonal (out_rows) and the non-finite flag (1).
@group(0) @binding(6) var<storage, read_write> full: array<f32>;

// Values staged per thread, operand and step: the tile's 8·WM columns × BK rows over WM·WM
// threads. A constant once the pipeline's overrides are set, so the loops over it unroll. (Not an
// override of its own: naga 30 panicked processing an override initialised from the core's.)
fn loads() -> u32 {
    return 8u * BK / WM;
}

// Values fetched for the next stage (index e: see `gram_tile`).
var<private> left_next: array<f32, MAX_LOADS>;
var<private> right_next: array<f32, MAX_LOADS>;
// Conv: operand offsets of the columns this thread stages (the same at every step).
var<private> left_cols: array<u32, MAX_LOADS>;
var<private> right_cols: array<u32, MAX_LOADS>;

// Where this thread's staged rows come from. Conv: one row per thread (k = lid % BK), tracked
// incrementally across stages; dense: one column per thread, rows k_first + e·k_step.
var<private> k_first: u32;
var<private> k_step: u32;
var<private> col_first: u32;
var<private> col_step: u32;
// Dense: the L and R columns this thread reads (clamped into the operands).
var<private> left_col: u32;
var<private> right_col: u32;
// Conv cursor of this thread's current row: image offset, output position, row index.
var<private> cur_base: u32;
var<private> cur_pos: u32;
var<private> cur_row: u32;
// This workgroup's tile and range: end of its rows, first result row (L column) and column (R
// column), end of the block's columns, split index.
var<private> row_end: u32;
var<private> tile_i0: u32;
var<private> tile_j0: u32;
var<private> tile_col_end: u32;
var<private> split: u32;
// This thread's position in the workgroup.
var<private> tx: u32;
var<private> ty: u32;

// Moves the conv cursor `BK` rows on (no division: positions ≥ BK needs one subtraction).
fn advance_cursor() {
    cur_row += BK;
    cur_pos += BK;
    while cur_pos >= p.positions {
        cur_pos -= p.positions;
        cur_base += p.image_len;
    }
}

// Fetches the stage starting at row `row0` into registers (zeros for rows past the range). The
// core's `load_stage` hook.
fn load_stage(row0: u32) {
    if p.conv == 2u {
        // Projection: this thread's row is the unfolded column k, the same table entry for
        // every staged result row (left_cols), and row k of W.
        let valid = cur_row < row_end;
        let k = min(cur_row, row_end - 1u);
        let col_at = columns[k];
        let w_at = k * p.right_stride;
        for (var e = 0u; e < loads(); e++) {
            let l = bitcast<f32>(left[left_cols[e] + col_at]);
            let r = bitcast<f32>(right[w_at + right_cols[e]]);
            left_next[e] = select(0.0, l, valid);
            right_next[e] = select(0.0, r, valid);
        }
        cur_row += BK;
    } else if p.conv == 3u {
        // Projected cross: L through the conv cursor, R the same row of the dense P.
        let valid = cur_row < row_end;
        let row_at = select(0u, cur_base + offsets[cur_pos], valid);
        let dense_at = select(0u, cur_row, valid) * p.right_stride;
        for (var e = 0u; e < loads(); e++) {
            let l = bitcast<f32>(left[row_at + left_cols[e]]);
            let r = bitcast<f32>(right[dense_at + right_cols[e]]);
            left_next[e] = select(0.0, l, valid);
            right_next[e] = select(0.0, r, valid);
        }
        advance_cursor();
    } else if p.conv != 0u {
        let valid = cur_row < row_end;
        // Past the range the cursor may point beyond the batch: read image 0 instead.
        let row_at = select(0u, cur_base + offsets[cur_pos], valid);
        for (var e = 0u; e < loads(); e++) {
            let l = bitcast<f32>(left[row_at + left_cols[e]]);
            let r = bitcast<f32>(right[row_at + right_cols[e]]);
            left_next[e] = select(0.0, l, valid);
            right_next[e] = select(0.0, r, valid);
        }
        advance_cursor();
    } else {
        for (var e = 0u; e < loads(); e++) {
            let row = row0 + k_first + e * k_step;
            let valid = row < row_end;
            let at = min(row, row_end - 1u);
            let l = bitcast<f32>(left[at * p.left_stride + left_col]);
            let r = bitcast<f32>(right[at * p.right_stride + right_col]);
            left_next[e] = select(0.0, l, valid);
            right_next[e] = select(0.0, r, valid);
        }
    }
}

// Writes the fetched values into stage `s` of workgroup memory (the core's `store_stage` hook).
fn store_stage(s: u32) {
    for (var e = 0u; e < loads(); e++) {
        let k = k_first + e * k_step;
        let col = col_first + e * col_step;
        store_a(s, k, col, left_next[e]);
        store_b(s, k, col, right_next[e]);
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

// Folds the block into this split's slice of `acc` every FOLD_ROWS rows and after the last stage,
// and clears it (the core's `stage_done` hook).
fn stage_done(block: ptr<function, Block>, rows: u32, last: bool) {
    if rows % FOLD_ROWS != 0u && !last {
        return;
    }
    let i0 = tile_i0;
    let j0 = tile_j0;
    fold_quad(split, i0 + block_row(0u, ty), j0 + block_col(0u, tx), (*block)[0]);
    fold_quad(split, i0 + block_row(0u, ty), j0 + block_col(1u, tx), (*block)[1]);
    fold_quad(split, i0 + block_row(1u, ty), j0 + block_col(0u, tx), (*block)[2]);
    fold_quad(split, i0 + block_row(1u, ty), j0 + block_col(1u, tx), (*block)[3]);
    fold_quad(split, i0 + block_row(2u, ty), j0 + block_col(0u, tx), (*block)[4]);
    fold_quad(split, i0 + block_row(2u, ty), j0 + block_col(1u, tx), (*block)[5]);
    fold_quad(split, i0 + block_row(3u, ty), j0 + block_col(0u, tx), (*block)[6]);
    fold_quad(split, i0 + block_row(3u, ty), j0 + block_col(1u, tx), (*block)[7]);
    fold_quad(split, i0 + block_row(4u, ty), j0 + block_col(0u, tx), (*block)[8]);
    fold_quad(split, i0 + block_row(4u, ty), j0 + block_col(1u, tx), (*block)[9]);
    fold_quad(split, i0 + block_row(5u, ty), j0 + block_col(0u, tx), (*block)[10]);
    fold_quad(split, i0 + block_row(5u, ty), j0 + block_col(1u, tx), (*block)[11]);
    fold_quad(split, i0 + block_row(6u, ty), j0 + block_col(0u, tx), (*block)[12]);
    fold_quad(split, i0 + block_row(6u, ty), j0 + block_col(1u, tx), (*block)[13]);
    fold_quad(split, i0 + block_row(7u, ty), j0 + block_col(0u, tx), (*block)[14]);
    fold_quad(split, i0 + block_row(7u, ty), j0 + block_col(1u, tx), (*block)[15]);
    *block = Block();
}

@compute @workgroup_size(WM * WN)
fn gram_tile(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile = 8u * WM;
    let threads = WM * WN;
    tile_i0 = wg.y * tile;
    tile_j0 = p.col0 + wg.x * tile;
    tile_col_end = p.col0 + p.block_cols;
    if p.symmetric != 0u && tile_i0 >= tile_j0 + tile {
        return; // Strictly below the diagonal.
    }
    split = wg.z;
    let first = wg.z * p.rows_per_split;
    row_end = min(p.rows, first + p.rows_per_split);
    if first >= row_end {
        return;
    }
    tx = lid % WN;
    ty = lid / WN;
    if p.conv != 0u {
        // Consecutive threads take consecutive rows (adjacent output positions are adjacent in
        // memory), each thread one row and loads() columns.
        k_first = lid % BK;
        k_step = 0u;
        col_first = lid / BK;
        col_step = threads / BK;
        for (var e = 0u; e < loads(); e++) {
            let col = col_first + e * col_step;
            let i = min(tile_i0 + col, p.out_rows - 1u);
            let j = min(tile_j0 + col, tile_col_end - 1u);
            if p.conv == 2u {
                // Result row i is the unfolded row: its image and output position.
                left_cols[e] = (i / p.positions) * p.image_len + offsets[i % p.positions];
            } else {
                left_cols[e] = columns[i];
            }
            // Modes 2 and 3 read R as dense rows: the column itself.
            if p.conv >= 2u {
                right_cols[e] = j;
            } else {
                right_cols[e] = columns[j];
            }
        }
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
        left_col = min(tile_i0 + col_first, p.out_rows - 1u);
        right_col = min(tile_j0 + col_first, tile_col_end - 1u);
    }
    var block = Block();
    multiply_range(&block, first, row_end, tx, ty);
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
    if p.symmetric != 0u && row > col {
        return;
    }
    full[row * p.out_cols + col] = value;
    if p.symmetric != 0u {
        full[col * p.out_cols + row] = value;
    }
    // After the matrix (out_rows · out_cols entries): the diagonal, then a flag set when any
    // entry is not finite, so that the host can check G and read its diagonal without reading
    // G back. The test is on the bits, which no float optimisation folds away; every writer of
    // the flag writes the same value.
    let tail = p.out_rows * p.out_cols;
    if row == col {
        full[tail + row] = value;
    }
    if (bitcast<u32>(value) & 0x7f800000u) == 0x7f800000u {
        full[tail + p.out_rows] = 1.0;
    }
}

// The dot product of each row of slice 0 of the accumulator (out_rows × block_cols pairs, one
// column block covering the whole result) with the same row of `right` (f32, right_stride
// values per row), as a compensated pair written to `full[2·row]`, `full[2·row + 1]`. With
// `C0 = G·W` (or `(AᵀA)·W`) and `W`, the host adds the rows up in order to `‖AW‖²`, so that
// neither product has to be read back.
@compute @workgroup_size(FLAT_THREADS)
fn row_dots(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let row = flat_index(gid, groups);
    if row >= p.out_rows {
        return;
    }
    var s = vec2<f32>(0.0, 0.0);
    for (var c = 0u; c < p.block_cols; c++) {
        let v = acc[row * p.block_cols + c];
        let w = bitcast<f32>(right[row * p.right_stride + c]);
        s = two_sum_add(s, v.x * w);
        s = two_sum_add(s, v.y * w);
    }
    full[2u * row] = s.x;
    full[2u * row + 1u] = s.y;
}
