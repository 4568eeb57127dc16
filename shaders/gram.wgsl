// Gram statistics (ALGORITHM.md §2): `acc += Lᵀ R` over one batch of unfolded rows.
//
// L and R are the unfolded consumer inputs (rows = images × output positions, D columns): B and B
// for `BᵀB`, B and A for the cross Gram `BᵀA`, A and A for `AᵀA`. They are never materialized:
// every element is read straight from the uploaded batch. A dense consumer (Linear, or
// Conv → Flatten → Linear) reads row r = image r, `D` values per image. A conv consumer is unfolded
// on the fly (implicit im2col), exactly `Unfolding::unfold_rows` on the host:
//     row = img·(oh·ow) + oy·ow + ox,   col = (c·kh + i)·kw + j,
//     value = x[img, c, oy·stride_h − pad_h + i·dil_h, ox·stride_w − pad_w + j·dil_w], 0 outside.
//
// One dispatch computes one column block [col0, col0 + block_cols) of the D × D sum: workgroup
// (x, y) owns the TILE × TILE output tile (rows y·TILE.., columns col0 + x·TILE..), workgroup z one
// row split of the batch (split-K, so that small D still fills the GPU). Each thread keeps an 8 × 8
// register block in f32; every FOLD_ROWS rows (and at the end of its split) it folds the block into
// its split's slice of `acc` as a compensated pair (hi, lo) with an error-free TwoSum, so the f32
// error does not grow with the number of batches. `fold_splits` adds the slices at the end.
// For a symmetric sum (`BᵀB`, `AᵀA`), tiles strictly below the diagonal are skipped and lower
// entries are not written: only the upper triangle of the result is valid.

// Output tile edge, in rows and columns of the D × D result.
const TILE: u32 = 128u;
// Unfolded rows staged in workgroup memory per step.
const KSTEP: u32 = 8u;
// Threads per workgroup: 16 × 16, each owning an 8 × 8 register block (two 4 × 4 quads per axis,
// 64 apart, so that workgroup-memory reads are conflict-free vec4 loads).
const THREADS: u32 = 256u;
// vec4s per staged row (TILE / 4).
const QUADS: u32 = 32u;
// Rows summed in registers before a compensated fold into `acc` (a multiple of KSTEP).
const FOLD_ROWS: u32 = 4096u;
// Marks an element outside the batch or in the padding (reads as 0).
const OUTSIDE: u32 = 0xffffffffu;

struct GramParams {
    // Unfolded rows in this batch.
    rows: u32,
    // Columns D of the unfolded matrix (= rows and columns of the full result).
    d: u32,
    // First output column of this block, and its width.
    col0: u32,
    block_cols: u32,
    // Row splits (workgroups along z) and rows per split (a multiple of KSTEP).
    splits: u32,
    rows_per_split: u32,
    // 1: L = R (BᵀB or AᵀA), only the upper triangle is computed.
    symmetric: u32,
    // 1: the batch holds f16 values packed two per u32 (low half first); 0: f32 bit patterns.
    half_inputs: u32,
    // 1: conv consumer (implicit im2col below); 0: dense rows of D values.
    conv: u32,
    // Per-image input shape (C, H, W) and output positions (oh, ow) of the conv consumer.
    channels: u32,
    height: u32,
    width: u32,
    out_h: u32,
    out_w: u32,
    // Conv kernel, stride, padding, dilation (height, width).
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    dil_h: u32,
    dil_w: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: GramParams;
// Left batch L: (n, C, H, W) or (n, D) row-major, as f32 bit patterns or packed f16 pairs.
@group(0) @binding(1) var<storage, read> left: array<u32>;
// Right batch R, same layout (may be the same buffer as `left`).
@group(0) @binding(2) var<storage, read> right: array<u32>;
// Accumulator of this column block: `splits` slices, each D rows × block_cols columns, row-major;
// element (row, col) of slice z is acc[(z·D + row)·block_cols + col − col0] = (hi, lo), the value
// being hi + lo.
@group(0) @binding(3) var<storage, read_write> acc: array<vec2<f32>>;

// Staged rows: left_tile[k·QUADS + q] holds columns 4q..4q+3 of the tile's L columns at row k.
var<workgroup> left_tile: array<vec4<f32>, KSTEP * QUADS>;
var<workgroup> right_tile: array<vec4<f32>, KSTEP * QUADS>;

// Where one unfolded column reads from: channel plane offset and kernel tap offsets.
struct ColumnMap {
    valid: bool,
    plane: u32,
    dy: i32,
    dx: i32,
}

// Where one unfolded row reads from: image offset and the top-left input position of its patch.
struct RowMap {
    valid: bool,
    base: u32,
    y: i32,
    x: i32,
}

fn column_map(col: u32, limit: u32) -> ColumnMap {
    var m: ColumnMap;
    m.valid = col < limit;
    if p.conv != 0u {
        let taps = p.kernel_h * p.kernel_w;
        let c = col / taps;
        let t = col % taps;
        m.plane = c * p.height * p.width;
        m.dy = i32((t / p.kernel_w) * p.dil_h) - i32(p.pad_h);
        m.dx = i32((t % p.kernel_w) * p.dil_w) - i32(p.pad_w);
    } else {
        m.plane = col;
        m.dy = 0;
        m.dx = 0;
    }
    return m;
}

fn row_map(row: u32, end: u32) -> RowMap {
    var m: RowMap;
    m.valid = row < end;
    if p.conv != 0u {
        let positions = p.out_h * p.out_w;
        let img = row / positions;
        let pos = row % positions;
        m.base = img * p.channels * p.height * p.width;
        m.y = i32((pos / p.out_w) * p.stride_h);
        m.x = i32((pos % p.out_w) * p.stride_w);
    } else {
        m.base = row * p.d;
        m.y = 0;
        m.x = 0;
    }
    return m;
}

// Flat index into the batch of element (row, col), or OUTSIDE (padding, or past the edges).
fn element_index(r: RowMap, c: ColumnMap) -> u32 {
    if !(r.valid && c.valid) {
        return OUTSIDE;
    }
    if p.conv == 0u {
        return r.base + c.plane;
    }
    let y = r.y + c.dy;
    let x = r.x + c.dx;
    if y < 0 || x < 0 || y >= i32(p.height) || x >= i32(p.width) {
        return OUTSIDE;
    }
    return r.base + c.plane + u32(y) * p.width + u32(x);
}

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

// (hi, lo) + x without rounding error in hi + lo (Knuth's TwoSum).
fn two_sum_add(pair: vec2<f32>, x: f32) -> vec2<f32> {
    let s = pair.x + x;
    let bp = s - pair.x;
    let err = (pair.x - (s - bp)) + (x - bp);
    return vec2<f32>(s, pair.y + err);
}

// Adds four consecutive output values (row, col..col+3) into slice z of the accumulator.
fn fold_quad(z: u32, row: u32, col: u32, v: vec4<f32>) {
    if row >= p.d {
        return;
    }
    let col_end = p.col0 + p.block_cols;
    for (var f = 0u; f < 4u; f++) {
        let c = col + f;
        if c < col_end && !(p.symmetric != 0u && row > c) {
            let idx = (z * p.d + row) * p.block_cols + (c - p.col0);
            acc[idx] = two_sum_add(acc[idx], v[f]);
        }
    }
}

@compute @workgroup_size(THREADS)
fn gram_tile(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i0 = wg.y * TILE;
    let j0 = p.col0 + wg.x * TILE;
    let col_end = p.col0 + p.block_cols;
    if p.symmetric != 0u && i0 >= j0 + TILE {
        return; // Strictly below the diagonal.
    }
    let first = wg.z * p.rows_per_split;
    let end = min(p.rows, first + p.rows_per_split);
    if first >= end {
        return;
    }
    let tx = lid % 16u;
    let ty = lid / 16u;
    // Staging: this thread loads row `load_k` of each step, tile columns load_q + 32e (e = 0..3),
    // so that a warp reads 32 consecutive columns per instruction. Column e lands in vec4
    // `load_q / 4 + 8e`, component `load_q % 4`.
    let load_k = lid / QUADS;
    let load_q = lid % QUADS;
    let slot = load_k * QUADS + load_q / 4u;
    let comp = load_q % 4u;
    var lcols: array<ColumnMap, 4>;
    var rcols: array<ColumnMap, 4>;
    for (var e = 0u; e < 4u; e++) {
        lcols[e] = column_map(i0 + load_q + 32u * e, p.d);
        rcols[e] = column_map(j0 + load_q + 32u * e, col_end);
    }

    // c[4a + e][b]: rows i0 + 64a + 4ty + e, columns j0 + 64b + 4tx .. + 3.
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

    // Software pipelining: the next step's values are fetched into registers while the current
    // step is multiplied, hiding global-memory latency behind the arithmetic.
    var lv = vec4<f32>(0.0);
    var rv = vec4<f32>(0.0);
    {
        let rm = row_map(first + load_k, end);
        for (var e = 0u; e < 4u; e++) {
            lv[e] = fetch_left(element_index(rm, lcols[e]));
            rv[e] = fetch_right(element_index(rm, rcols[e]));
        }
    }
    for (var row0 = first; row0 < end; row0 += KSTEP) {
        workgroupBarrier(); // The previous step's reads are done.
        for (var e = 0u; e < 4u; e++) {
            left_tile[slot + 8u * e][comp] = lv[e];
            right_tile[slot + 8u * e][comp] = rv[e];
        }
        workgroupBarrier();
        let rm = row_map(row0 + KSTEP + load_k, end);
        for (var e = 0u; e < 4u; e++) {
            lv[e] = fetch_left(element_index(rm, lcols[e]));
            rv[e] = fetch_right(element_index(rm, rcols[e]));
        }
        for (var k = 0u; k < KSTEP; k++) {
            let a0 = left_tile[k * QUADS + ty];
            let a1 = left_tile[k * QUADS + 16u + ty];
            let b0 = right_tile[k * QUADS + tx];
            let b1 = right_tile[k * QUADS + 16u + tx];
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
        let next = row0 + KSTEP;
        if (next - first) % FOLD_ROWS == 0u || next >= end {
            let r0 = i0 + 4u * ty;
            let r1 = i0 + 64u + 4u * ty;
            let q0 = j0 + 4u * tx;
            let q1 = j0 + 64u + 4u * tx;
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
    }
}

// (hi, lo) + (hi, lo), compensated.
fn pair_add(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let s = a.x + b.x;
    let bp = s - a.x;
    let err = (a.x - (s - bp)) + (b.x - bp);
    return vec2<f32>(s, a.y + b.y + err);
}

// Adds slices 1..splits of the accumulator into slice 0 (one thread per element of a slice).
// Dispatched as a 2-D grid of workgroups when one dimension is not enough.
@compute @workgroup_size(THREADS)
fn fold_splits(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let idx = gid.x + gid.y * groups.x * THREADS;
    let n = p.d * p.block_cols;
    if idx >= n {
        return;
    }
    var s = acc[idx];
    for (var z = 1u; z < p.splits; z++) {
        s = pair_add(s, acc[z * n + idx]);
    }
    acc[idx] = s;
}
