//! The adam family: one Adam step in place, the CPU backend against an f64
//! transcription of torch.optim.Adam, then the WGSL kernel against the CPU.

mod common;

use approx::relative_eq;
use common::{BE, rng, t, to64, uniform};
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};
use sasrec_kernels::{AdamStep, Backend};

// ----- CPU reference ---------------------------------------------------------

#[test]
fn adam_first_step_moves_by_lr_times_sign() {
    // Step 1 from zero moments: m = (1-b1) g, v = (1-b2) g^2, so
    // m_hat / (sqrt(v_hat) + eps) = g / (|g| + eps) ~ sign(g).
    let hp = AdamStep {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        step: 1,
    };
    let mut p = t(&[1.0, 1.0, 1.0], &[3]);
    let (mut m, mut v) = (BE.zeros(&[3]), BE.zeros(&[3]));
    BE.adam(&mut p, &t(&[0.5, -2.0, 0.0], &[3]), &mut m, &mut v, &hp);
    assert_close(
        "adam step 1",
        p.data(),
        &[0.99, 1.01, 1.0],
        Tol::new(1e-6, 1e-7),
    );
}

fn adam_case(seed: u64, hp0: AdamStep, n: usize, steps: u64) {
    let mut r = rng(seed);
    let p0 = uniform(&mut r, n, 1.0);
    let mut p = t(&p0, &[n]);
    let (mut m, mut v) = (BE.zeros(&[n]), BE.zeros(&[n]));
    let mut p64 = to64(&p0);
    let (mut m64, mut v64) = (vec![0.0f64; n], vec![0.0f64; n]);
    let (b1, b2, lr, eps) = (hp0.beta1, hp0.beta2, hp0.lr, hp0.eps);
    // Largest |g| seen per element: the lerp `m + w (g - m)` cancels, so
    // m's f32 error scales with |g|, not with |m|.
    let mut g_max = vec![0.0f64; n];
    for step in 1..=steps {
        // Gradients of mixed magnitude, some exactly 0.
        let g: Vec<f32> = uniform(&mut r, n, 1.0)
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if i % 7 == 0 {
                    0.0
                } else {
                    x * 10f32.powi(i as i32 % 5 - 2)
                }
            })
            .collect();
        let hp = AdamStep { step, ..hp0 };
        BE.adam(&mut p, &t(&g, &[n]), &mut m, &mut v, &hp);
        let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for i in 0..n {
            let g = g[i] as f64;
            g_max[i] = g_max[i].max(g.abs());
            m64[i] += (1.0 - b1) * (g - m64[i]);
            v64[i] = b2 * v64[i] + (1.0 - b2) * g * g;
            let denom = v64[i].sqrt() / bc2.sqrt() + eps;
            p64[i] -= lr / bc1 * m64[i] / denom;
        }
        for i in 0..n {
            let (pm, mm, vm) = (p.data()[i] as f64, m.data()[i] as f64, v.data()[i] as f64);
            assert!(
                (mm - m64[i]).abs() <= 1e-5 * m64[i].abs() + 2e-6 * g_max[i],
                "adam step {step} m[{i}]: got {mm}, expected {}",
                m64[i]
            );
            assert!(
                relative_eq!(vm, v64[i], epsilon = 1e-12, max_relative = 1e-5),
                "adam step {step} v[{i}]: got {vm}, expected {}",
                v64[i]
            );
            assert!(
                relative_eq!(pm, p64[i], epsilon = 1e-7, max_relative = 1e-5),
                "adam step {step} param[{i}]: got {pm}, expected {}",
                p64[i]
            );
        }
    }
}

#[test]
fn adam_matches_f64_reference_over_steps() {
    let hp = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        step: 1,
    };
    adam_case(100, hp, 45, 6);
    // Large enough for the rayon path.
    adam_case(101, hp, 70_001, 3);
    // beta1 < 0.5 takes lerp's other branch.
    adam_case(
        102,
        AdamStep {
            beta1: 0.3,
            lr: 0.05,
            ..hp
        },
        45,
        4,
    );
}

// ----- GPU against CPU ---------------------------------------------------------

#[test]
fn adam_several_steps() {
    let Some(p) = BackendPair::new() else { return };
    let (cpu, gpu) = (&p.cpu, &p.gpu);
    let mut rng = rng(17);
    let n = 1029;
    let (mut cp, mut gp) = p.tensor(&uniform(&mut rng, n, 1.0), &[n]);
    let (mut cm, mut gm) = (cpu.zeros(&[n]), gpu.zeros(&[n]));
    let (mut cv, mut gv) = (cpu.zeros(&[n]), gpu.zeros(&[n]));
    for step in 1..=5 {
        let (cg, gg) = p.tensor(&uniform(&mut rng, n, 0.1), &[n]);
        let hp = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step,
        };
        cpu.adam(&mut cp, &cg, &mut cm, &mut cv, &hp);
        gpu.adam(&mut gp, &gg, &mut gm, &mut gv, &hp);
    }
    // A few roundings per step (sqrt, division) that may differ by an ulp.
    let tol = Tol::new(1e-5, 1e-7);
    p.check("adam m", &cm, &gm, tol);
    p.check("adam v", &cv, &gv, tol);
    p.check("adam param", &cp, &gp, tol);
}

// ----- NaN and infinities -------------------------------------------------------

#[test]
fn a_nan_gradient_reaches_only_its_parameter() {
    let Some(p) = BackendPair::new() else { return };
    let n = 300;
    let (mut cp, mut gp) = p.tensor(&uniform(&mut rng(24), n, 1.0), &[n]);
    let (mut cm, mut gm) = (p.cpu.zeros(&[n]), p.gpu.zeros(&[n]));
    let (mut cv, mut gv) = (p.cpu.zeros(&[n]), p.gpu.zeros(&[n]));
    let mut g = uniform(&mut rng(25), n, 0.1);
    g[17] = f32::NAN;
    g[200] = f32::INFINITY;
    let (cg, gg) = p.tensor(&g, &[n]);
    let hp = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        step: 1,
    };
    p.cpu.adam(&mut cp, &cg, &mut cm, &mut cv, &hp);
    p.gpu.adam(&mut gp, &gg, &mut gm, &mut gv, &hp);
    let bad: Vec<usize> = (0..n).filter(|&i| !cp.data()[i].is_finite()).collect();
    assert_eq!(bad, [17, 200]);
    let tol = Tol::new(1e-5, 1e-7);
    p.check_with_non_finite("adam param", &cp, &gp, tol);
    p.check_with_non_finite("adam m", &cm, &gm, tol);
    p.check_with_non_finite("adam v", &cv, &gv, tol);
}
