//! The one safe wrapper around the `gemm` crate's f32 and f64 kernels: strided matrix views
//! checked at the boundary (dimensions, strides, slice lengths), an explicit parallelism argument.
//!
//! Every product in the crate goes through [`gemm()`] or [`syrk_upper_tiles`] (the statistics'
//! symmetric product, tile pairs in parallel); nothing else calls the `gemm` crate's `unsafe`
//! entry point.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// How many threads one product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// The calling thread only (use inside an outer parallel loop).
    Seq,
    /// Rayon's global pool, with up to this many threads.
    Rayon(usize),
}

impl Par {
    /// All of rayon's threads (or [`Par::Seq`] when there is one).
    pub fn all() -> Self {
        match rayon::current_num_threads() {
            0 | 1 => Par::Seq,
            n => Par::Rayon(n),
        }
    }

    fn to_gemm(self) -> gemm::Parallelism {
        match self {
            Par::Seq | Par::Rayon(0) | Par::Rayon(1) => gemm::Parallelism::None,
            Par::Rayon(n) => gemm::Parallelism::Rayon(n),
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// An element type [`gemm()`] multiplies: `f32` or `f64` (the `gemm` crate's real kernels; the
/// trait is sealed, so no other type can reach its type-dispatched entry point).
pub trait Scalar: sealed::Sealed + Copy + Send + Sync + std::fmt::Debug + 'static {
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
}

impl Scalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Scalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// A read-only `rows × cols` matrix: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T: Scalar> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A writable `rows × cols` matrix: element `(i, j)` is `data[i·row_stride + j·col_stride]`,
/// laid out row-major (`col_stride = 1`, `row_stride ≥ cols`) or, after [`MatMut::t`],
/// column-major, so that no two elements share memory.
#[derive(Debug)]
pub struct MatMut<'a, T: Scalar> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// Whether the last element `(rows−1, cols−1)` lies inside a slice of `len`, and the strides
/// are offsets a pointer can take.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rs > isize::MAX as usize || cs > isize::MAX as usize {
        return false;
    }
    if rows == 0 || cols == 0 {
        return true;
    }
    (rows - 1)
        .checked_mul(rs)
        .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)))
        .is_some_and(|last| last < len)
}

impl<'a, T: Scalar> MatRef<'a, T> {
    /// A view with explicit strides, checked against `data`'s length.
    pub fn new(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        if !fits(data.len(), rows, cols, row_stride, col_stride) {
            return Err(Error::Shape(format!(
                "matrix view {rows}×{cols} with strides ({row_stride}, {col_stride}) does not fit {} values",
                data.len()
            )));
        }
        Ok(Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A dense row-major `rows × cols` view.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense `rows × cols` view stored column after column (`data[j·rows + i]`).
    pub fn col_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, 1, rows)
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Rows `row0..row0 + rows` and columns `col0..col0 + cols` (no copy), checked against the
    /// view's size.
    pub fn submatrix(self, row0: usize, col0: usize, rows: usize, cols: usize) -> Result<Self> {
        if row0.checked_add(rows).is_none_or(|end| end > self.rows)
            || col0.checked_add(cols).is_none_or(|end| end > self.cols)
        {
            return Err(Error::Shape(format!(
                "submatrix {rows}×{cols} at ({row0}, {col0}) of a {}×{} matrix",
                self.rows, self.cols
            )));
        }
        if rows == 0 || cols == 0 {
            return Self::new(&[], rows, cols, self.row_stride, self.col_stride);
        }
        let offset = row0 * self.row_stride + col0 * self.col_stride;
        Self::new(
            &self.data[offset..],
            rows,
            cols,
            self.row_stride,
            self.col_stride,
        )
    }

    /// Rows × columns.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Element `(i, j)`, or `None` out of bounds.
    pub fn get(&self, i: usize, j: usize) -> Option<T> {
        (i < self.rows && j < self.cols)
            .then(|| self.data[i * self.row_stride + j * self.col_stride])
    }
}

impl<'a, T: Scalar> MatMut<'a, T> {
    /// A row-major view with `row_stride ≥ cols` (rows may be padded), checked against `data`'s
    /// length.
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, row_stride: usize) -> Result<Self> {
        if row_stride < cols && rows > 1 || !fits(data.len(), rows, cols, row_stride, 1) {
            return Err(Error::Shape(format!(
                "output matrix {rows}×{cols} with row stride {row_stride} does not fit {} values",
                data.len()
            )));
        }
        Ok(Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        })
    }

    /// A dense row-major `rows × cols` view.
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols)
    }

    /// The transpose (no copy): a row-major view becomes a column-major one, and back.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Rows × columns.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn fill_zero(&mut self) {
        for i in 0..self.rows {
            for j in 0..self.cols {
                self.data[i * self.row_stride + j * self.col_stride] = T::ZERO;
            }
        }
    }
}

/// `dst = alpha · lhs · rhs`, or with `accumulate`, `dst += alpha · lhs · rhs`.
///
/// Fails (before touching `dst`) unless `dst` is `m × n`, `lhs` is `m × k` and `rhs` is `k × n`.
/// `par` says how many threads the product may use: [`Par::Seq`] inside an outer parallel loop.
pub fn gemm<T: Scalar>(
    mut dst: MatMut<'_, T>,
    accumulate: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    alpha: T,
    par: Par,
) -> Result<()> {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    if lhs.rows != m || rhs.rows != k || rhs.cols != n {
        return Err(Error::Shape(format!(
            "gemm: {}×{} = {}×{} · {}×{}",
            m, n, lhs.rows, lhs.cols, rhs.rows, rhs.cols
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            dst.fill_zero();
        }
        return Ok(());
    }
    // SAFETY: every view was checked on construction to address only elements of its own slice
    // (`fits`, strides ≤ isize::MAX), the dimensions agree (checked above), `dst` is borrowed
    // mutably so it cannot alias `lhs` or `rhs` or be accessed elsewhere, and its layout (row- or
    // column-major with a stride ≥ the other dimension) keeps its elements distinct.
    unsafe {
        gemm_raw(
            dst.data.as_mut_ptr(),
            dst.row_stride,
            dst.col_stride,
            accumulate,
            lhs,
            rhs,
            alpha,
            par,
        )
    };
    Ok(())
}

/// The one call of the `gemm` crate's kernel: `dst (+)= alpha · lhs · rhs` with `dst`'s element
/// `(i, j)` at `dst + i·dst_rs + j·dst_cs`.
///
/// # Safety
/// The dimensions must agree (`lhs` is `m × k`, `rhs` is `k × n`, `dst` is `m × n`), `dst` must
/// be valid for writes at every `(i, j)`, those addresses must be distinct and disjoint from
/// `lhs` and `rhs`, and no other thread may access them during the call. `T` is f32 or f64
/// (sealed), a type the `gemm` crate has kernels for; the views address only their own slices
/// (checked on construction).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw<T: Scalar>(
    dst: *mut T,
    dst_rs: usize,
    dst_cs: usize,
    accumulate: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    alpha: T,
    par: Par,
) {
    debug_assert!(lhs.cols == rhs.rows);
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            lhs.rows,
            rhs.cols,
            lhs.cols,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            T::ONE,
            alpha,
            false,
            false,
            false,
            par.to_gemm(),
        );
    }
}

/// A raw pointer handed to rayon tasks that write disjoint tiles of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: used only to hand disjoint tiles of one buffer to rayon tasks.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// `dst (+)= aᵀ·a` on the tiles of `dst` on and above the diagonal, the symmetric product of
/// the statistics (`BᵀB`): `dst` is row-major `n × n` with `n` the columns of `a`, cut into
/// `tile × tile` tiles (the last ones narrower), and every tile pair `(i ≤ j)` is one sequential
/// product in a rayon task of its own, so that half the work is done and spread evenly. The
/// strictly lower entries of diagonal tiles are computed too; tiles below the diagonal are not
/// touched. Fails (before touching `dst`) unless `dst` holds `n × n` values and `tile ≥ 1`.
pub fn syrk_upper_tiles<T: Scalar>(
    dst: &mut [T],
    a: MatRef<'_, T>,
    tile: usize,
    accumulate: bool,
) -> Result<()> {
    let (k, n) = a.shape();
    if n.checked_mul(n) != Some(dst.len()) || tile == 0 {
        return Err(Error::Shape(format!(
            "syrk: {} values for the {n}×{n} product of a {k}×{n} matrix, tile {tile}",
            dst.len()
        )));
    }
    let tiles = n.div_ceil(tile);
    let pairs: Vec<(usize, usize)> = (0..tiles)
        .flat_map(|i| (i..tiles).map(move |j| (i, j)))
        .collect();
    let base = SendPtr(dst.as_mut_ptr());
    pairs.par_iter().try_for_each(|&(ti, tj)| {
        let (i0, j0) = (ti * tile, tj * tile);
        let (ni, nj) = (tile.min(n - i0), tile.min(n - j0));
        let p = base;
        if k == 0 {
            if !accumulate {
                for i in i0..i0 + ni {
                    // SAFETY: row i, columns j0..j0 + nj of the n × n dst: in bounds, and this
                    // task's tile alone (tiles of distinct pairs do not overlap).
                    unsafe { std::slice::from_raw_parts_mut(p.0.add(i * n + j0), nj) }
                        .fill(T::ZERO);
                }
            }
            return Ok(());
        }
        let lhs = a.submatrix(0, i0, k, ni)?.t();
        let rhs = a.submatrix(0, j0, k, nj)?;
        // SAFETY: the tile (rows i0.., columns j0.. of the n × n row-major dst, ni × nj) is in
        // bounds and written by this task alone (tiles of distinct pairs do not overlap); dst is
        // borrowed mutably, so it aliases neither `a` nor anything another thread reads; the
        // dimensions agree by construction (ni × k times k × nj).
        unsafe {
            gemm_raw(
                p.0.add(i0 * n + j0),
                n,
                1,
                accumulate,
                lhs,
                rhs,
                T::ONE,
                Par::Seq,
            )
        };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A scalar type under test: its conversions and the tolerance its products are held to.
    trait Testable: Scalar {
        fn from_f64(v: f64) -> Self;
        fn to_f64(self) -> f64;
        /// Relative tolerance of a k-term dot product (f32: rounding grows with k).
        const TOL: f64;
    }
    impl Testable for f32 {
        fn from_f64(v: f64) -> Self {
            v as f32
        }
        fn to_f64(self) -> f64 {
            self as f64
        }
        const TOL: f64 = 1e-4;
    }
    impl Testable for f64 {
        fn from_f64(v: f64) -> Self {
            v
        }
        fn to_f64(self) -> f64 {
            self
        }
        const TOL: f64 = 1e-12;
    }

    /// `a · b` in plain f64 loops over the views' own `get`.
    fn reference<T: Testable>(a: &MatRef<T>, b: &MatRef<T>) -> Vec<f64> {
        let (m, k) = a.shape();
        let n = b.shape().1;
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    out[i * n + j] += a.get(i, p).unwrap().to_f64() * b.get(p, j).unwrap().to_f64();
                }
            }
        }
        out
    }

    fn random<T: Testable>(rng: &mut Rng, len: usize) -> Vec<T> {
        (0..len).map(|_| T::from_f64(rng.normal())).collect()
    }

    /// Every operand layout the wrapper accepts: `lhs` row-major, transposed, or strided inside
    /// a larger buffer (a submatrix with a column stride of 2); `rhs` likewise; `dst` row-major
    /// with padded rows or column-major (a transposed view); with and without accumulation;
    /// sequential and on two threads. Compared with plain f64 loops.
    fn check_all_layouts<T: Testable>(seed: u64) {
        let mut rng = Rng::new(seed);
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 13, 5),
            (33, 17, 65),
            (3, 70, 1),
            (64, 1, 129),
            (5, 3, 0),
        ] {
            let a_plain = random::<T>(&mut rng, m * k);
            let a_trans = random::<T>(&mut rng, k * m);
            // A (m+3) × (2k+5) buffer; lhs = rows 2.., every other column from column 1.
            let a_big = random::<T>(&mut rng, (m + 3) * (2 * k + 5));
            let b_plain = random::<T>(&mut rng, k * n);
            let b_trans = random::<T>(&mut rng, n * k);
            let b_big = random::<T>(&mut rng, (k + 2) * (2 * n + 3));
            let lhs_views = [
                MatRef::row_major(&a_plain, m, k).unwrap(),
                MatRef::row_major(&a_trans, k, m).unwrap().t(),
                MatRef::new(&a_big, m + 3, k + 2, 2 * k + 5, 2)
                    .unwrap()
                    .submatrix(2, 1, m, k)
                    .unwrap(),
            ];
            let rhs_views = [
                MatRef::row_major(&b_plain, k, n).unwrap(),
                MatRef::row_major(&b_trans, n, k).unwrap().t(),
                MatRef::new(&b_big, k + 2, n + 1, 2 * n + 3, 2)
                    .unwrap()
                    .submatrix(1, 1, k, n)
                    .unwrap(),
            ];
            for lhs in lhs_views {
                for rhs in rhs_views {
                    let want = reference(&lhs, &rhs);
                    for (accumulate, par, column_major) in [
                        (false, Par::Seq, false),
                        (true, Par::Rayon(2), false),
                        (false, Par::Rayon(2), true),
                        (true, Par::Seq, true),
                    ] {
                        let alpha = T::from_f64(-1.5);
                        let start = 0.25;
                        let stride = if column_major { m + 2 } else { n + 3 };
                        let outer = if column_major { n } else { m };
                        let mut buf = vec![T::from_f64(start); outer * stride];
                        let dst = if column_major {
                            MatMut::new(&mut buf, n, m, stride).unwrap().t()
                        } else {
                            MatMut::new(&mut buf, m, n, stride).unwrap()
                        };
                        assert_eq!(dst.shape(), (m, n));
                        gemm(dst, accumulate, lhs, rhs, alpha, par).unwrap();
                        let at = |i: usize, j: usize| {
                            if column_major {
                                buf[j * stride + i]
                            } else {
                                buf[i * stride + j]
                            }
                        };
                        for i in 0..m {
                            for j in 0..n {
                                let base = if accumulate { start } else { 0.0 };
                                let w = base - 1.5 * want[i * n + j];
                                let got = at(i, j).to_f64();
                                let tol = T::TOL * (1.0 + w.abs() + k as f64);
                                assert!(
                                    (got - w).abs() <= tol,
                                    "{m}×{n}×{k}, accumulate {accumulate}, column-major \
                                     {column_major}: ({i}, {j}) = {got}, expected {w}"
                                );
                            }
                        }
                        // The padding between rows (columns) is untouched.
                        for o in 0..outer {
                            let used = if column_major { m } else { n };
                            assert!(buf[o * stride + used..(o + 1) * stride]
                                .iter()
                                .all(|v| v.to_f64() == start));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn f32_matches_f64_loops_on_awkward_strided_transposed_shapes() {
        check_all_layouts::<f32>(7);
    }

    #[test]
    fn f64_matches_f64_loops_on_awkward_strided_transposed_shapes() {
        check_all_layouts::<f64>(8);
    }

    #[test]
    fn empty_products_leave_or_zero_the_output() {
        let a = vec![1.0f64; 6];
        let mut d = vec![9.0f64; 4];
        let lhs = MatRef::row_major(&a[..0], 2, 0).unwrap();
        let rhs = MatRef::row_major(&a[..0], 0, 2).unwrap();
        gemm(
            MatMut::row_major(&mut d, 2, 2).unwrap(),
            true,
            lhs,
            rhs,
            1.0,
            Par::Seq,
        )
        .unwrap();
        assert_eq!(d, [9.0; 4]);
        gemm(
            MatMut::row_major(&mut d, 2, 2).unwrap(),
            false,
            lhs,
            rhs,
            1.0,
            Par::Seq,
        )
        .unwrap();
        assert_eq!(d, [0.0; 4]);
        // No rows: nothing to do, and nothing read.
        let none = MatRef::row_major(&a[..0], 0, 3).unwrap();
        let b = MatRef::row_major(&a, 3, 2).unwrap();
        gemm(
            MatMut::row_major(&mut d[..0], 0, 2).unwrap(),
            false,
            none,
            b,
            1.0,
            Par::Seq,
        )
        .unwrap();
    }

    #[test]
    fn rejects_views_that_do_not_fit_and_shapes_that_do_not_agree() {
        let a = vec![0.0f32; 10];
        assert!(MatRef::row_major(&a, 3, 4).is_err());
        assert!(MatRef::new(&a, 2, 5, 5, 1).is_ok());
        assert!(MatRef::new(&a, 2, 2, usize::MAX, 1).is_err());
        assert!(MatRef::new(&a, 2, 2, 1 << 63, 1).is_err());
        let view = MatRef::row_major(&a, 2, 5).unwrap();
        assert!(view.submatrix(1, 3, 1, 2).is_ok());
        assert!(view.submatrix(1, 4, 1, 2).is_err());
        assert!(view.submatrix(usize::MAX, 0, 2, 1).is_err());
        let mut d = vec![0.0f32; 4];
        // Rows that overlap (stride < cols) are refused.
        assert!(MatMut::new(&mut d, 2, 2, 1).is_err());
        assert!(MatMut::new(&mut d, 2, 3, 3).is_err());
        let err = gemm(
            MatMut::row_major(&mut d, 2, 2).unwrap(),
            false,
            view,
            view,
            1.0,
            Par::Seq,
        )
        .unwrap_err();
        assert!(err.to_string().contains("2×2 = 2×5 · 2×5"), "{err}");
        assert_eq!(d, [0.0; 4]);
    }

    /// `syrk_upper_tiles` against plain f64 `aᵀa` on awkward sizes and tiles (not multiples of
    /// each other, one tile, tiles wider than the matrix), row- and column-major `a`, with and
    /// without accumulation, and no rows at all: the upper tiles hold the product, the tiles
    /// below the diagonal keep what was there.
    #[test]
    fn syrk_upper_tiles_match_f64_and_leave_the_lower_tiles_alone() {
        let mut rng = Rng::new(5);
        for &(k, n, tile) in &[
            (1, 1, 1),
            (37, 5, 2),
            (130, 67, 16),
            (3, 70, 32),
            (9, 8, 100),
            (0, 6, 4),
        ] {
            let plain = random::<f32>(&mut rng, k * n);
            let trans = random::<f32>(&mut rng, n * k);
            for a in [
                MatRef::row_major(&plain, k, n).unwrap(),
                MatRef::col_major(&trans, k, n).unwrap(),
            ] {
                let want = reference(&a.t(), &a);
                for accumulate in [false, true] {
                    let start = 0.5f32;
                    let mut dst = vec![start; n * n];
                    syrk_upper_tiles(&mut dst, a, tile, accumulate).unwrap();
                    for i in 0..n {
                        for j in 0..n {
                            let got = dst[i * n + j] as f64;
                            if i / tile > j / tile {
                                assert_eq!(got, start as f64, "lower tile ({i},{j}) touched");
                                continue;
                            }
                            let w = want[i * n + j] + if accumulate { start as f64 } else { 0.0 };
                            assert!(
                                (got - w).abs() <= f32::TOL * (1.0 + w.abs() + k as f64),
                                "k={k} n={n} tile={tile} ({i},{j}): {got} vs {w}"
                            );
                        }
                    }
                }
            }
        }
        let a = vec![0.0f32; 6];
        let view = MatRef::row_major(&a, 2, 3).unwrap();
        assert!(syrk_upper_tiles(&mut [0.0f32; 8], view, 2, false).is_err());
        assert!(syrk_upper_tiles(&mut [0.0f32; 9], view, 0, false).is_err());
    }
}
