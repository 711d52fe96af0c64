//! What both x86 microkernels share: the vector operations they need
//! ([`Simd`]) and the register-tiled kernel generic over them. `avx512.rs`
//! and `avx2.rs` instantiate [`task`] inside functions compiled for their
//! features, so every intrinsic inlines.

use std::arch::x86_64::*;
use std::ops::Range;

use super::operands::{BSource, Job, KC, NC};

/// The handful of vector operations the kernel needs.
pub(super) trait Simd {
    type V: Copy;
    const LANES: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    /// The first `n < LANES` lanes from `p`, zeros after.
    unsafe fn load_part(p: *const f32, n: usize) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Stores the first `n < LANES` lanes.
    unsafe fn store_part(p: *mut f32, v: Self::V, n: usize);
    /// `a * b + c`, one rounding.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
}

/// Floats ahead of the current `k` that the kernel prefetches in a
/// transposed `a` (two cache lines: the next tiles' values).
const PREFETCH_AHEAD: usize = 32;

/// What one call of the microkernel computes: the `mr x nr` block at
/// `c` (row stride `ldc`) gets `sum_p a[r, p] * b[p, :]` over `kc`
/// values of `p`; `a` row `r` starts at `a_rows[r]`, steps `csa` per
/// `p`; `b` rows start at `b`, `rsb` apart. Rows `r >= mr` of the
/// register tile repeat row 0 and are not stored.
struct Tile {
    kc: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    mr: usize,
    b: *const f32,
    rsb: usize,
    nr: usize,
    c: *mut f32,
    ldc: usize,
    out: Out,
}

/// How the kernel writes its tile.
#[derive(Clone, Copy)]
enum Out {
    /// `c = acc` (`c` is not read).
    Store,
    /// `c += acc`.
    Add,
    /// `c = beta * c + acc`.
    Scale(f32),
}

/// The register-tiled product: `MR x NV * LANES` accumulators. `FULL`:
/// all `NR` columns are valid (no masks). `PREFETCH`: `a` is transposed.
#[inline(always)]
unsafe fn tile<
    S: Simd,
    const MR: usize,
    const NV: usize,
    const FULL: bool,
    const PREFETCH: bool,
>(
    t: &Tile,
) {
    unsafe {
        let mut acc = [[S::zero(); NV]; MR];
        let mut rows = [0usize; MR];
        for (r, row) in rows.iter_mut().enumerate() {
            *row = if r < t.mr { r * t.rsa } else { 0 };
        }
        let lanes = |v: usize| t.nr.saturating_sub(v * S::LANES).min(S::LANES);
        let (mut ap, mut bp) = (t.a, t.b);
        for _ in 0..t.kc {
            let mut bv = [S::zero(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = if FULL || lanes(v) == S::LANES {
                    S::load(bp.add(v * S::LANES))
                } else if lanes(v) > 0 {
                    S::load_part(bp.add(v * S::LANES), lanes(v))
                } else {
                    S::zero()
                };
            }
            if PREFETCH {
                _mm_prefetch::<_MM_HINT_T0>(ap.wrapping_add(PREFETCH_AHEAD) as *const i8);
            }
            for r in 0..MR {
                let av = S::splat(*ap.add(rows[r]));
                for v in 0..NV {
                    acc[r][v] = S::fmadd(av, bv[v], acc[r][v]);
                }
            }
            ap = ap.wrapping_add(t.csa);
            bp = bp.wrapping_add(t.rsb);
        }
        for (r, acc) in acc.iter().enumerate().take(t.mr) {
            let row = t.c.add(r * t.ldc);
            for (v, &x) in acc.iter().enumerate() {
                let (p, n) = (row.add(v * S::LANES), lanes(v));
                if !FULL && n == 0 {
                    break;
                }
                let full = FULL || n == S::LANES;
                let old = || if full { S::load(p) } else { S::load_part(p, n) };
                let x = match t.out {
                    Out::Store => x,
                    Out::Add => S::add(old(), x),
                    Out::Scale(beta) => S::fmadd(S::splat(beta), old(), x),
                };
                if full {
                    S::store(p, x)
                } else {
                    S::store_part(p, x, n)
                }
            }
        }
    }
}

/// One task with an `MR x NV * LANES` kernel: for each block of `KC`
/// values of `k`, every row tile x column panel of the task.
#[inline(always)]
pub(super) unsafe fn task<S: Simd, const MR: usize, const NV: usize>(
    job: &Job<'_>,
    rows: Range<usize>,
    cols: Range<usize>,
    ks: Range<usize>,
) {
    let nr = NV * S::LANES;
    let transposed_a = job.a.rs == 1 && job.a.cs > 1;
    let mut p0 = ks.start;
    while p0 < ks.end {
        let kc = KC.min(ks.end - p0);
        let out = if p0 > ks.start || job.beta == 1.0 {
            Out::Add
        } else if job.beta == 0.0 {
            Out::Store
        } else {
            Out::Scale(job.beta)
        };
        for i in rows.clone().step_by(MR) {
            for j in cols.clone().step_by(nr) {
                let (b, rsb) = match job.b {
                    BSource::InPlace { data, rs } => (data.as_ptr().wrapping_add(p0 * rs + j), rs),
                    BSource::Packed(pb) => (
                        pb.panels
                            .as_ptr()
                            .wrapping_add((j / nr) * pb.k * nr + p0 * nr),
                        nr,
                    ),
                };
                let t = Tile {
                    kc,
                    a: job
                        .a
                        .data
                        .as_ptr()
                        .wrapping_add(i * job.a.rs + p0 * job.a.cs),
                    rsa: job.a.rs,
                    csa: job.a.cs,
                    mr: MR.min(rows.end - i),
                    b,
                    rsb,
                    nr: nr.min(cols.end - j),
                    c: job.c.0.wrapping_add(i * job.ldc + j),
                    ldc: job.ldc,
                    out,
                };
                // SAFETY (all four): the tile lies inside the task's
                // block (mr, nr clipped), which lies inside the operands.
                unsafe {
                    match (t.nr == nr, transposed_a) {
                        (true, false) => tile::<S, MR, NV, true, false>(&t),
                        (true, true) => tile::<S, MR, NV, true, true>(&t),
                        (false, false) => tile::<S, MR, NV, false, false>(&t),
                        (false, true) => tile::<S, MR, NV, false, true>(&t),
                    }
                }
            }
            if let Some(finish) = job.finish
                && p0 + kc == ks.end
            {
                for r in i..(i + MR).min(rows.end) {
                    // SAFETY: the row's columns of this task, which only
                    // this task writes; no tile of it is in flight.
                    let values = unsafe {
                        std::slice::from_raw_parts_mut(
                            job.c.0.add(r * job.ldc + cols.start),
                            cols.len(),
                        )
                    };
                    finish(r, cols.start / NC, values);
                }
            }
        }
        p0 += kc;
    }
}
