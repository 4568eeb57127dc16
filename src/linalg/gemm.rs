//! The one safe wrapper around the `gemm` crate's f32 kernels: strided matrix views checked at
//! the boundary (dimensions, strides, slice lengths), an explicit parallelism argument.

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

/// A read-only `rows × cols` f32 matrix: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A writable `rows × cols` f32 matrix, row-major with `row_stride ≥ cols` (so that no two
/// elements share memory).
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

/// Whether the last element `(rows−1, cols−1)` lies inside a slice of `len`.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    (rows - 1)
        .checked_mul(rs)
        .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)))
        .is_some_and(|last| last < len)
}

impl<'a> MatRef<'a> {
    /// A view with explicit strides, checked against `data`'s length.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        if !fits(data.len(), rows, cols, row_stride, col_stride)
            || row_stride > isize::MAX as usize
            || col_stride > isize::MAX as usize
        {
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
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
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
}

impl<'a> MatMut<'a> {
    /// A row-major view with `row_stride ≥ cols`, checked against `data`'s length.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Result<Self> {
        if row_stride < cols && rows > 1
            || !fits(data.len(), rows, cols, row_stride, 1)
            || row_stride > isize::MAX as usize
        {
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
        })
    }

    /// A dense row-major `rows × cols` view.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols)
    }
}

/// `dst = alpha · lhs · rhs` (or `dst += alpha · lhs · rhs` with `accumulate`).
pub fn gemm(
    dst: MatMut<'_>,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    alpha: f32,
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
            for r in 0..m {
                dst.data[r * dst.row_stride..r * dst.row_stride + n].fill(0.0);
            }
        }
        return Ok(());
    }
    // SAFETY: every view was checked on construction to address only elements of its own slice
    // (`fits`), the dimensions agree (checked above), `dst` is borrowed mutably so it cannot alias
    // `lhs` or `rhs`, and its row stride ≥ cols keeps its elements distinct.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            par.to_gemm(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &MatRef, b: &MatRef) -> Vec<f64> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for p in 0..a.cols {
                    out[i * b.cols + j] += a.data[i * a.row_stride + p * a.col_stride] as f64
                        * b.data[p * b.row_stride + j * b.col_stride] as f64;
                }
            }
        }
        out
    }

    #[test]
    fn matches_f64_reference_on_awkward_strided_shapes() {
        let mut rng = crate::rng::Rng::new(7);
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 13, 5),
            (33, 17, 65),
            (3, 70, 1),
            (64, 1, 129),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
            // b stored transposed (n × k), viewed as k × n.
            let lhs = MatRef::row_major(&a, m, k).unwrap();
            let rhs = MatRef::row_major(&b, n, k).unwrap().t();
            let want = reference(&lhs, &rhs);
            let stride = n + 3;
            let mut dst = vec![1.0f32; m * stride];
            for par in [Par::Seq, Par::Rayon(2)] {
                gemm(
                    MatMut::new(&mut dst, m, n, stride).unwrap(),
                    false,
                    lhs,
                    rhs,
                    2.0,
                    par,
                )
                .unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let (got, w) = (dst[i * stride + j] as f64, 2.0 * want[i * n + j]);
                        assert!((got - w).abs() <= 1e-4 * (1.0 + w.abs()), "{m}×{n}×{k}");
                    }
                    // Padding between rows is untouched.
                    assert!(dst[i * stride + n..(i + 1) * stride]
                        .iter()
                        .all(|&v| v == 1.0));
                }
            }
        }
    }

    #[test]
    fn rejects_views_that_do_not_fit() {
        let a = vec![0.0f32; 10];
        assert!(MatRef::row_major(&a, 3, 4).is_err());
        assert!(MatRef::new(&a, 2, 5, 5, 1).is_ok());
        let lhs = MatRef::row_major(&a, 2, 5).unwrap();
        let mut d = vec![0.0f32; 4];
        let err = gemm(
            MatMut::row_major(&mut d, 2, 2).unwrap(),
            false,
            lhs,
            lhs,
            1.0,
            Par::Seq,
        );
        assert!(err.is_err());
    }
}
