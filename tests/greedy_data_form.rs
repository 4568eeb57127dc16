//! The data-form greedy (n < D, issue 7 item 5) against the Gram form: on small random layers with
//! fewer unfolded rows than columns, the Gram-form CPU greedy on f64 statistics computed directly
//! from the unfolded data (the test's own im2col) and the data form must give the same order (up
//! to the exact tie at full rank) and error curves within 1e-9; `select` must choose the data form by itself.

mod common;

use common::{flatten_rows, im2col, normals, weight_matrix, Geometry, Mat};
use subprune::layer::ChannelLayout;
use subprune::rng::Rng;
use subprune::{ConvOptions, CpuBackend, GreedyForm, LayerProblem, LayerStats, Tensor};

fn random(rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::new(shape.to_vec(), normals(rng, shape.iter().product(), 1.0)).unwrap()
}

/// f64 statistics of B (n × D) and A: G = BᵀB, C0 = BᵀA·W, ‖AW‖².
fn f64_stats(b: &Mat, a: &Mat, w: &Mat, layout: ChannelLayout) -> LayerStats {
    let gram = b.t_matmul(b);
    let aw = a.matmul(w);
    let c0 = b.t_matmul(&aw);
    LayerStats {
        layout,
        outputs: w.cols,
        gram: gram.data.into(),
        c0: subprune::layer::StatsMatrix::from_host(c0.data, w.cols),
        total: aw.frob2(),
        weight: w.data.clone(),
        rows: b.rows,
        phases: Default::default(),
    }
}

fn compare(what: &str, x: &Tensor, w: &Tensor, target: Option<&Tensor>, conv: Option<ConvOptions>) {
    let problem = LayerProblem::new(&x.shape, w.view(), conv).unwrap();
    let layout = problem.layout();
    let unfold = |t: &Tensor| match (x.shape.len(), w.shape.len()) {
        (4, 4) => {
            let c = conv.unwrap_or_default();
            im2col(
                t,
                &Geometry {
                    kernel: [w.shape[2], w.shape[3]],
                    stride: c.stride,
                    padding: c.padding,
                    dilation: c.dilation,
                },
            )
        }
        _ => flatten_rows(t),
    };
    let b = unfold(x);
    let a = target.map(unfold).unwrap_or_else(|| b.clone());
    assert!(
        b.rows < layout.columns(),
        "{what}: not a rank-deficient case"
    );
    let stats = f64_stats(&b, &a, &weight_matrix(w), layout);
    let tol = subprune::DEFAULT_DEPENDENCE_TOL;
    let gram = subprune::run_greedy(&CpuBackend::new(), &stats, tol, &mut |_, _, _| {}).unwrap();
    let data = subprune::layer::dataform::run_greedy_data(
        &problem,
        x.view(),
        target.map(|t| t.view()),
        tol,
        &mut |_, _, _| {},
    )
    .unwrap();
    // Once the kept columns can span what is left of the n-dimensional row space, every candidate
    // explains all of it: an exact tie, broken by rounding. The picks before are tie-free.
    let tie_free = (b.rows - 1) / layout.columns_per_channel;
    assert!(tie_free >= 2, "{what}: too few tie-free picks to compare");
    assert_eq!(
        data.order[..tie_free],
        gram.order[..tie_free],
        "{what}: orders differ"
    );
    assert!(
        (data.total - gram.total).abs() <= 1e-9 * gram.total,
        "{what}: totals"
    );
    for (k, (e_data, e_gram)) in data.error_curve.iter().zip(&gram.error_curve).enumerate() {
        assert!(
            (e_data - e_gram).abs() <= 1e-9,
            "{what}: error at {} kept: data {e_data} vs gram {e_gram}",
            k + 1
        );
    }
    // select() picks the data form itself, and its reweighted error is the curve's.
    let k = layout.channels / 2;
    let options = subprune::SelectOptions {
        budget: subprune::Budget::Keep(k),
        ..Default::default()
    };
    let sel = subprune::select(
        &CpuBackend::new(),
        &problem,
        x.view(),
        target.map(|t| t.view()),
        &options,
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(sel.form, GreedyForm::Data, "{what}");
    assert_eq!(sel.run.order, data.order, "{what}");
    let reweighted = subprune::reweight(&stats, &sel.kept, 0.0, tol).unwrap();
    assert!(
        (sel.relative_error - reweighted.relative_error).abs() <= 1e-9,
        "{what}: {} vs {}",
        sel.relative_error,
        reweighted.relative_error
    );
    // The data form's weights are the f64 reweighting's (dropped columns zero in both).
    let want = problem.weight_tensor(&sel.kept, &reweighted.weight);
    assert_eq!(sel.weight.shape, want.shape, "{what}");
    let scale = want
        .data
        .iter()
        .fold(0.0f32, |a, v| a.max(v.abs()))
        .max(1e-30);
    for (got, w) in sel.weight.data.iter().zip(&want.data) {
        assert!(
            (got - w).abs() <= 1e-4 * scale,
            "{what}: weight {got} vs {w}"
        );
    }
    // Without reweighting: the original rows and their error.
    let plain = subprune::select(
        &CpuBackend::new(),
        &problem,
        x.view(),
        target.map(|t| t.view()),
        &subprune::SelectOptions {
            reweight: false,
            ..options
        },
        &mut |_, _, _| {},
    )
    .unwrap();
    let want = subprune::layer::reweight::original_rows(&stats, &plain.kept, None)
        .map(|r| r.relative_error)
        .unwrap();
    assert!(
        (plain.relative_error - want).abs() <= 1e-9 * want.max(1.0),
        "{what}: no-reweight error {} vs {want}",
        plain.relative_error
    );
}

#[test]
fn data_form_matches_gram_form_on_rank_deficient_layers() {
    let mut rng = Rng::new(21);
    for seed in 0..3 {
        // Linear: 7 images, 13 channels.
        let x = random(&mut rng, &[7, 13]);
        let w = random(&mut rng, &[5, 13]);
        compare(&format!("linear {seed}"), &x, &w, None, None);
        let t = random(&mut rng, &[7, 13]);
        compare(&format!("linear asym {seed}"), &x, &w, Some(&t), None);
        // Conv → Flatten → Linear: 13 images, 5 channels of 2 × 3 (D = 30).
        let x = random(&mut rng, &[13, 5, 2, 3]);
        let w = random(&mut rng, &[4, 30]);
        compare(&format!("flatten {seed}"), &x, &w, None, None);
        // Conv 3 × 3 on 4 × 3 maps, padding 1 (12 positions), 2 images, 4 channels: n = 24 < 36.
        let x = random(&mut rng, &[2, 4, 4, 3]);
        let w = random(&mut rng, &[3, 4, 3, 3]);
        let conv = ConvOptions {
            padding: [1, 1],
            ..Default::default()
        };
        compare(&format!("conv {seed}"), &x, &w, None, Some(conv));
    }
}

#[test]
fn enough_rows_keep_the_gram_form() {
    let mut rng = Rng::new(22);
    let x = random(&mut rng, &[40, 6]);
    let w = random(&mut rng, &[3, 6]);
    let problem = LayerProblem::new(&x.shape, w.view(), None).unwrap();
    let sel = subprune::select(
        &CpuBackend::new(),
        &problem,
        x.view(),
        None,
        &Default::default(),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(sel.form, GreedyForm::Gram);
}
