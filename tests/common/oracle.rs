//! An independent f64 oracle for the layer problem.
//!
//! It never looks at Gram statistics: it unfolds the raw `(N, C[, H, W])` tensors itself (its own
//! im2col), reshapes the consumer weight itself, and solves every least-squares problem directly on
//! the `n × |S|·ks` data matrix by Householder QR in f64 (no normal equations). The residual is
//! then computed explicitly as `‖AW − B_S W~‖²`.

use subprune::rng::Rng;
use subprune::Tensor;

/// A dense row-major f64 matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }

    pub fn set(&mut self, r: usize, c: usize, v: f64) {
        self.data[r * self.cols + c] = v;
    }

    /// The columns `cols` of `self`, in that order.
    pub fn select_columns(&self, cols: &[usize]) -> Mat {
        let mut out = Mat::zeros(self.rows, cols.len());
        for r in 0..self.rows {
            for (j, &c) in cols.iter().enumerate() {
                out.set(r, j, self.at(r, c));
            }
        }
        out
    }

    /// The rows `rows` of `self`, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Mat {
        let mut out = Mat::zeros(rows.len(), self.cols);
        for (i, &r) in rows.iter().enumerate() {
            out.data[i * self.cols..(i + 1) * self.cols]
                .copy_from_slice(&self.data[r * self.cols..(r + 1) * self.cols]);
        }
        out
    }

    pub fn matmul(&self, other: &Mat) -> Mat {
        assert_eq!(self.cols, other.rows);
        let mut out = Mat::zeros(self.rows, other.cols);
        for i in 0..self.rows {
            for k in 0..self.cols {
                let a = self.at(i, k);
                if a == 0.0 {
                    continue;
                }
                let row = &other.data[k * other.cols..(k + 1) * other.cols];
                for (o, b) in out.data[i * other.cols..(i + 1) * other.cols]
                    .iter_mut()
                    .zip(row)
                {
                    *o += a * b;
                }
            }
        }
        out
    }

    /// `selfᵀ · other`.
    pub fn t_matmul(&self, other: &Mat) -> Mat {
        assert_eq!(self.rows, other.rows);
        let mut out = Mat::zeros(self.cols, other.cols);
        for r in 0..self.rows {
            let a_row = &self.data[r * self.cols..(r + 1) * self.cols];
            let b_row = &other.data[r * other.cols..(r + 1) * other.cols];
            for (i, &a) in a_row.iter().enumerate() {
                if a == 0.0 {
                    continue;
                }
                for (o, &b) in out.data[i * other.cols..(i + 1) * other.cols]
                    .iter_mut()
                    .zip(b_row)
                {
                    *o += a * b;
                }
            }
        }
        out
    }

    pub fn frob2(&self) -> f64 {
        self.data.iter().map(|v| v * v).sum()
    }

    /// `‖self − other‖²_F`.
    pub fn dist2(&self, other: &Mat) -> f64 {
        assert_eq!((self.rows, self.cols), (other.rows, other.cols));
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b) * (a - b))
            .sum()
    }
}

/// Kernel geometry of a conv consumer, as the oracle sees it.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

/// im2col of an `(N, C, H, W)` tensor: one row per (image, output y, output x) in that order, the
/// column of (channel c, kernel row i, kernel column j) is `(c·kh + i)·kw + j` (PyTorch's weight
/// layout `(M, C, kh, kw)` flattened). Taps that fall in the zero padding read 0.
pub fn im2col(x: &Tensor, g: &Geometry) -> Mat {
    let [n, c, h, w] = <[usize; 4]>::try_from(x.shape.as_slice()).expect("4-D input");
    let [kh, kw] = g.kernel;
    let out_len = |size: usize, axis: usize| {
        let span = g.dilation[axis] * (g.kernel[axis] - 1) + 1;
        (size + 2 * g.padding[axis] - span) / g.stride[axis] + 1
    };
    let (oh, ow) = (out_len(h, 0), out_len(w, 1));
    let d = c * kh * kw;
    let mut b = Mat::zeros(n * oh * ow, d);
    let pixel = |img: usize, ch: usize, y: i64, xx: i64| -> f64 {
        if y < 0 || xx < 0 || y >= h as i64 || xx >= w as i64 {
            0.0
        } else {
            x.data[((img * c + ch) * h + y as usize) * w + xx as usize] as f64
        }
    };
    let mut row = 0;
    for img in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    for i in 0..kh {
                        for j in 0..kw {
                            let y = (oy * g.stride[0]) as i64 + (i * g.dilation[0]) as i64
                                - g.padding[0] as i64;
                            let xx = (ox * g.stride[1]) as i64 + (j * g.dilation[1]) as i64
                                - g.padding[1] as i64;
                            b.set(row, (ch * kh + i) * kw + j, pixel(img, ch, y, xx));
                        }
                    }
                }
                row += 1;
            }
        }
    }
    b
}

/// A `(N, …)` tensor as an `N × (product of the rest)` matrix: the unfolded input of a Linear
/// consumer (`(N, C)`) or of Conv → Flatten → Linear (`(N, C, H, W)`, row-major flatten).
pub fn flatten_rows(x: &Tensor) -> Mat {
    let n = x.shape[0];
    let d: usize = x.shape[1..].iter().product();
    Mat {
        rows: n,
        cols: d,
        data: x.data.iter().map(|&v| v as f64).collect(),
    }
}

/// The consumer weight `(M, …)` as the `D × M` matrix `W` with `B·W` = the consumer's output.
pub fn weight_matrix(w: &Tensor) -> Mat {
    let m = w.shape[0];
    let d: usize = w.shape[1..].iter().product();
    let mut out = Mat::zeros(d, m);
    for o in 0..m {
        for col in 0..d {
            out.set(col, o, w.data[o * d + col] as f64);
        }
    }
    out
}

/// Least squares `min_Z ‖Y − X Z‖_F` by Householder QR of `X` (`n × p`, `n ≥ p`, full column rank
/// expected). Returns `Z` (`p × m`).
pub fn lstsq(x: &Mat, y: &Mat) -> Mat {
    let (n, p, m) = (x.rows, x.cols, y.cols);
    assert!(n >= p, "least squares needs n ≥ p ({n} < {p})");
    assert_eq!(y.rows, n);
    let mut a = x.clone();
    let mut q_t_y = y.clone();
    let mut v = vec![0.0; n];
    for j in 0..p {
        // Householder vector for a[j.., j].
        let norm = (j..n).map(|r| a.at(r, j).powi(2)).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        let alpha = if a.at(j, j) > 0.0 { -norm } else { norm };
        for (r, vr) in v.iter_mut().enumerate().skip(j) {
            *vr = a.at(r, j);
        }
        v[j] -= alpha;
        let vnorm2: f64 = (j..n).map(|r| v[r] * v[r]).sum();
        if vnorm2 == 0.0 {
            continue;
        }
        // Apply H = I − 2 v vᵀ / (vᵀv) to a[j.., j..] and to Y.
        for c in j..p {
            let s: f64 = (j..n).map(|r| v[r] * a.at(r, c)).sum::<f64>() * 2.0 / vnorm2;
            for (r, &vr) in v.iter().enumerate().skip(j) {
                let val = a.at(r, c) - s * vr;
                a.set(r, c, val);
            }
        }
        for c in 0..m {
            let s: f64 = (j..n).map(|r| v[r] * q_t_y.at(r, c)).sum::<f64>() * 2.0 / vnorm2;
            for (r, &vr) in v.iter().enumerate().skip(j) {
                let val = q_t_y.at(r, c) - s * vr;
                q_t_y.set(r, c, val);
            }
        }
    }
    // Back substitution R Z = (Qᵀ Y)[..p].
    let mut z = Mat::zeros(p, m);
    for i in (0..p).rev() {
        let rii = a.at(i, i);
        assert!(rii != 0.0, "rank-deficient least-squares problem");
        for c in 0..m {
            let mut s = q_t_y.at(i, c);
            for k in i + 1..p {
                s -= a.at(i, k) * z.at(k, c);
            }
            z.set(i, c, s / rii);
        }
    }
    z
}

/// The layer problem seen from the raw data: `B` (`n × D`), the target output `AW` (`n × m`),
/// the weight `W` (`D × m`) and the channel layout.
pub struct Oracle {
    pub b: Mat,
    pub target_out: Mat,
    pub w: Mat,
    pub channels: usize,
    /// Columns per channel `ks`.
    pub columns_per_channel: usize,
    /// `‖AW‖²_F`.
    pub total: f64,
}

/// The oracle's greedy: order, normalized error curve, and how clear each choice was.
#[derive(Clone, Debug)]
pub struct OracleRun {
    pub order: Vec<usize>,
    pub error_curve: Vec<f64>,
    /// Smallest gap, over all steps with ≥ 2 candidates, between the best and the second-best
    /// candidate's normalized error. Tells whether an f32-statistics engine can be expected to
    /// make the same choices.
    pub min_gap: f64,
}

impl Oracle {
    /// `b` and `a` are the unfolded inputs and targets (`n × D`), `w` the `D × m` weight.
    pub fn new(b: Mat, a: &Mat, w: Mat, columns_per_channel: usize) -> Self {
        assert_eq!(b.cols % columns_per_channel, 0);
        assert_eq!((a.rows, a.cols), (b.rows, b.cols));
        let target_out = a.matmul(&w);
        let total = target_out.frob2();
        Self {
            channels: b.cols / columns_per_channel,
            b,
            target_out,
            w,
            columns_per_channel,
            total,
        }
    }

    /// Column indices of the channels of `set`, in the given order.
    pub fn columns(&self, set: &[usize]) -> Vec<usize> {
        set.iter()
            .flat_map(|&c| c * self.columns_per_channel..(c + 1) * self.columns_per_channel)
            .collect()
    }

    /// `(W~, ‖AW − B_S W~‖²)` with `W~` the least-squares optimum (rows in the order of `set`).
    pub fn least_squares(&self, set: &[usize]) -> (Mat, f64) {
        if set.is_empty() {
            return (Mat::zeros(0, self.w.cols), self.total);
        }
        let bs = self.b.select_columns(&self.columns(set));
        let z = lstsq(&bs, &self.target_out);
        let residual = self.target_out.dist2(&bs.matmul(&z));
        (z, residual)
    }

    /// `min ‖AW − B_S W~‖² / ‖AW‖²`.
    pub fn error(&self, set: &[usize]) -> f64 {
        self.least_squares(set).1 / self.total
    }

    /// `F(S) = ‖AW‖² − min ‖AW − B_S W~‖²`.
    pub fn f_value(&self, set: &[usize]) -> f64 {
        self.total - self.least_squares(set).1
    }

    /// `‖AW − B_S W_S‖² / ‖AW‖²` with the original weight rows of the kept channels.
    pub fn error_without_reweight(&self, set: &[usize]) -> f64 {
        let cols = self.columns(set);
        let out = self
            .b
            .select_columns(&cols)
            .matmul(&self.w.select_rows(&cols));
        self.target_out.dist2(&out) / self.total
    }

    /// Greedy by brute force: at each step, the remaining channel whose addition gives the smallest
    /// least-squares residual (ties: lowest index).
    pub fn greedy(&self) -> OracleRun {
        let mut order: Vec<usize> = Vec::new();
        let mut error_curve = Vec::new();
        let mut min_gap = f64::INFINITY;
        for _ in 0..self.channels {
            let mut scored: Vec<(f64, usize)> = (0..self.channels)
                .filter(|c| !order.contains(c))
                .map(|c| {
                    let mut set = order.clone();
                    set.push(c);
                    (self.error(&set), c)
                })
                .collect();
            // Stable sort on the error keeps the lowest index first among exact ties.
            scored.sort_by(|a, b| a.0.total_cmp(&b.0));
            if scored.len() >= 2 {
                min_gap = min_gap.min(scored[1].0 - scored[0].0);
            }
            order.push(scored[0].1);
            error_curve.push(scored[0].0);
        }
        OracleRun {
            order,
            error_curve,
            min_gap,
        }
    }
}

/// `n` standard normal values times `scale`, as f32.
pub fn normals(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

/// A tensor of standard normals with channel `c` (axis 1) scaled by `scales[c]`, so that channels
/// differ in importance and greedy choices are well separated.
pub fn scaled_channels(rng: &mut Rng, shape: &[usize], scales: &[f64]) -> Tensor {
    let c = shape[1];
    assert_eq!(scales.len(), c);
    let per_channel: usize = shape[2..].iter().product();
    let len: usize = shape.iter().product();
    let data = (0..len)
        .map(|i| (rng.normal() * scales[(i / per_channel) % c]) as f32)
        .collect();
    Tensor::new(shape.to_vec(), data).unwrap()
}

/// `x + noise·N(0, 1)`, elementwise, as a new tensor (the asymmetric variant's target).
pub fn perturbed(rng: &mut Rng, x: &Tensor, noise: f64) -> Tensor {
    let data = x
        .data
        .iter()
        .map(|&v| (v as f64 + noise * rng.normal()) as f32)
        .collect();
    Tensor::new(x.shape.clone(), data).unwrap()
}

/// Channel scales spread over `[lo, hi]` in a seed-dependent order.
pub fn spread_scales(rng: &mut Rng, channels: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut scales: Vec<f64> = (0..channels)
        .map(|i| lo + (hi - lo) * i as f64 / (channels.max(2) - 1) as f64)
        .collect();
    // Fisher–Yates with the test's generator.
    for i in (1..channels).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        scales.swap(i, j);
    }
    scales
}

/// `n × d` matrix with orthonormal columns: the Q factor of a Gaussian matrix, by classical
/// Gram–Schmidt with one re-orthogonalization pass (orthogonal to ~1e-15 in f64).
pub fn orthonormal_columns(rng: &mut Rng, n: usize, d: usize) -> Mat {
    assert!(n >= d);
    let mut q = Mat::zeros(n, d);
    for j in 0..d {
        let mut v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        for _pass in 0..2 {
            for k in 0..j {
                let dot: f64 = (0..n).map(|r| q.at(r, k) * v[r]).sum();
                for (r, vr) in v.iter_mut().enumerate() {
                    *vr -= dot * q.at(r, k);
                }
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for (r, vr) in v.iter().enumerate() {
            q.set(r, j, vr / norm);
        }
    }
    q
}

/// The members of the subset of `0..c` encoded by the bit mask `mask`.
pub fn members(mask: usize, c: usize) -> Vec<usize> {
    (0..c).filter(|&i| mask >> i & 1 == 1).collect()
}

/// The greedy on the raw data, incrementally: modified Gram–Schmidt in f64. After each pick the
/// picked channel's columns, orthonormalized, are projected out of every remaining column and out
/// of the target `AW`; a candidate's gain is then the squared norm of the residual target on the
/// span of its (projected) columns. Same quantity as [`Oracle::greedy`] at `O(n·D²)` in total, for
/// layers too large for a least-squares solve per candidate per step. A column whose projection
/// falls under `1e-9` of its original norm is dependent on the selection and contributes nothing.
pub struct Incremental<'a> {
    oracle: &'a Oracle,
    /// `B` with the picked directions projected out, column-major (`D` columns of `n`).
    columns: Vec<Vec<f64>>,
    /// `AW` with the picked directions projected out, column-major (`m` columns of `n`).
    target: Vec<Vec<f64>>,
    norms0: Vec<f64>,
    pub selected: Vec<bool>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(y: &mut [f64], alpha: f64, x: &[f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

impl<'a> Incremental<'a> {
    pub fn new(oracle: &'a Oracle) -> Self {
        let col = |m: &Mat, c: usize| (0..m.rows).map(|r| m.at(r, c)).collect::<Vec<_>>();
        let columns: Vec<Vec<f64>> = (0..oracle.b.cols).map(|c| col(&oracle.b, c)).collect();
        let norms0 = columns.iter().map(|c| dot(c, c).sqrt()).collect();
        Self {
            columns,
            target: (0..oracle.target_out.cols)
                .map(|c| col(&oracle.target_out, c))
                .collect(),
            norms0,
            selected: vec![false; oracle.channels],
            oracle,
        }
    }

    /// Orthonormal basis of channel `c`'s projected columns (dependent ones dropped).
    fn basis(&self, c: usize) -> Vec<Vec<f64>> {
        let ks = self.oracle.columns_per_channel;
        let mut q: Vec<Vec<f64>> = Vec::new();
        for col in c * ks..(c + 1) * ks {
            let mut v = self.columns[col].clone();
            for _pass in 0..2 {
                for qt in &q {
                    let s = dot(qt, &v);
                    axpy(&mut v, -s, qt);
                }
            }
            let norm = dot(&v, &v).sqrt();
            if norm > 1e-9 * self.norms0[col] && norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
                q.push(v);
            }
        }
        q
    }

    /// `F(S ∪ {c}) − F(S)` for the current selection `S`.
    pub fn gain(&self, c: usize) -> f64 {
        self.basis(c)
            .iter()
            .map(|q| self.target.iter().map(|t| dot(q, t).powi(2)).sum::<f64>())
            .sum()
    }

    /// Adds channel `c` to the selection.
    pub fn pick(&mut self, c: usize) {
        let q = self.basis(c);
        self.selected[c] = true;
        let ks = self.oracle.columns_per_channel;
        for (col, v) in self.columns.iter_mut().enumerate() {
            if self.selected[col / ks] {
                continue;
            }
            for qt in &q {
                let s = dot(qt, v);
                axpy(v, -s, qt);
            }
        }
        for t in self.target.iter_mut() {
            for qt in &q {
                let s = dot(qt, t);
                axpy(t, -s, qt);
            }
        }
    }

    /// `‖AW − P_S AW‖² / ‖AW‖²` for the current selection.
    pub fn error(&self) -> f64 {
        self.target.iter().map(|t| dot(t, t)).sum::<f64>() / self.oracle.total
    }
}

/// Follows a given greedy order with the incremental oracle. Returns, per step, the oracle's error
/// after the pick and the pick's regret: (best oracle gain − oracle gain of the pick) / ‖AW‖².
pub fn follow_order(oracle: &Oracle, order: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let mut inc = Incremental::new(oracle);
    let mut curve = Vec::new();
    let mut regret = Vec::new();
    for &pick in order {
        let gains: Vec<(usize, f64)> = (0..oracle.channels)
            .filter(|&c| !inc.selected[c])
            .map(|c| (c, inc.gain(c)))
            .collect();
        let best = gains.iter().map(|g| g.1).fold(f64::NEG_INFINITY, f64::max);
        let mine = gains
            .iter()
            .find(|g| g.0 == pick)
            .expect("the order picks a channel twice")
            .1;
        regret.push((best - mine) / oracle.total);
        inc.pick(pick);
        curve.push(inc.error());
    }
    (curve, regret)
}
