//! The CPU backend's sgemm: `c = op(a) @ op(b) + beta * c` on row-major
//! `f32` buffers, with register-tiled microkernels for AVX-512 (`avx512.rs`)
//! and for AVX2 + FMA (`avx2.rs`, the kernel both share in `x86.rs`) chosen
//! at run time (matrixmultiply on other CPUs, [`Job::portable`]).
//!
//! Layout of the work (after Goto and BLIS, but without packing `op(a)`):
//!
//! - `op(b)` is read as rows of `NR` contiguous values: in place when its
//!   columns are contiguous (`b` not transposed), else from a copy packed
//!   into `NR`-wide panels, [`PackedB`]. A caller that multiplies by the same
//!   matrix many times (the cross-entropy's item table) packs it once.
//! - `op(a)` is read in place through its strides, one value at a time,
//!   broadcast across a register: nothing of `a` is copied, which matters
//!   when `a` is the cross-entropy's `[rows, vocab]` logits. When a step of
//!   `k` jumps from one row of `a`'s storage to the next (`a` transposed),
//!   the kernel prefetches ahead, because 200 such rows are more streams
//!   than the hardware prefetcher follows.
//! - The microkernel keeps an `MR x NR` tile of `c` in registers over a
//!   block of `KC` values of `k`, so that block of `op(b)` (`KC x NR`) stays
//!   in L2 while every row tile of the task passes over it.
//!
//! Determinism: the work is cut into tasks (groups of rows x blocks of `NC`
//! columns x parts of `k`) by the sizes alone, never by the number of
//! threads, and every element of `c` is summed in a fixed order: `k` blocks
//! in order within a part, then the parts' sums in order. Results are the
//! same bits for any thread count (they differ between CPUs with and
//! without AVX-512 or FMA, as any BLAS's do).

use rayon::prelude::*;

use operands::{BSource, Finish, Job, KC, Strided};
pub(crate) use operands::{Isa, NC, PackedB, SharedMut};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod operands;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Rows per task at least, when `k` is longer than one block, so that a
/// block of `op(b)` read from L3 serves several row tiles from L2.
const MIN_GROUP_ROWS: usize = 48;
/// About this many flops per task: ~40 us at one core's speed, far above a
/// rayon task's overhead.
const TASK_FLOPS: usize = 4 << 20;
/// Tasks per product at most: enough to balance 16-32 threads.
const MAX_TASKS: usize = 64;

/// `c = op(a) @ op(b) + beta * c`, `op(a)` `[m, k]` (`a` stored `[k, m]`
/// when `trans_a`), `op(b)` `[k, n]` (`b` stored `[n, k]` when `trans_b`),
/// `c` `[m, n]` row-major. With `beta = 0` the old contents of `c` are
/// ignored (even NaN).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    beta: f32,
    c: &mut [f32],
) {
    sgemm_with(Isa::detect(), m, k, n, a, trans_a, b, trans_b, beta, c)
}

#[allow(clippy::too_many_arguments)]
fn sgemm_with(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    beta: f32,
    c: &mut [f32],
) {
    check_sizes(m, k, n, a.len(), b.len(), c.len());
    let a_op = Strided::new(a, trans_a, m, k);
    if isa == Isa::Portable {
        portable(m, k, n, a_op, Strided::new(b, trans_b, k, n), beta, c);
    } else if trans_b {
        let packed = PackedB::for_isa(isa, b, trans_b, k, n);
        run(isa, m, k, n, a_op, BSource::Packed(&packed), beta, c, None);
    } else {
        run(
            isa,
            m,
            k,
            n,
            a_op,
            BSource::InPlace { data: b, rs: n },
            beta,
            c,
            None,
        );
    }
}

/// `c = a @ op(b)` with `op(b)` packed beforehand (`a` `[m, k]`, `c`
/// `[m, n]`), then `finish(row, block, values)` on each row of each block
/// of [`NC`] columns (`values` = `c[row, block * NC..]`, at most `NC`
/// long), which may rewrite them: it runs as soon as their row tile is
/// done, while they are in cache. Its result goes to
/// `out[row * n.div_ceil(NC) + block]`.
///
/// # Panics
/// If `b` was packed for another `k` or `n`, or `out` has the wrong length.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_packed_rows<T: Send>(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &PackedB,
    c: &mut [f32],
    out: &mut [T],
    finish: impl Fn(usize, usize, &mut [f32]) -> T + Sync,
) {
    assert!(
        b.k == k && b.n == n,
        "gemm: b was packed as {}x{}, not {k}x{n}",
        b.k,
        b.n
    );
    check_sizes(m, k, n, a.len(), k * n, c.len());
    let blocks = n.div_ceil(NC);
    assert_eq!(out.len(), m * blocks, "gemm: out is not [m, column blocks]");
    let out = SharedMut(out.as_mut_ptr());
    let finish = move |row: usize, block: usize, values: &mut [f32]| {
        let value = finish(row, block, values);
        // SAFETY: `run` calls this once per (row, block), each inside `out`.
        unsafe { *out.offset(row * blocks + block).0 = value };
    };
    let a = Strided::new(a, false, m, k);
    if b.isa == Isa::Portable {
        portable(m, k, n, a, Strided::new(&b.panels, false, k, n), 0.0, c);
        finish_all(n, c, &finish);
    } else {
        run(b.isa, m, k, n, a, BSource::Packed(b), 0.0, c, Some(&finish));
    }
}

/// The two products of `e` `[m, k]` that the cross-entropy's backward
/// needs, with every value of `e` first multiplied by a scale per row and
/// block of [`NC`] columns, `s[r, j / NC]` (`scales` `[m, k.div_ceil(NC)]`):
/// `eb = (s e) @ b` (`b` `[k, n]`, `eb` `[m, n]`) and
/// `etd += (s e)^T @ d` (`d` `[m, n]`, `etd` `[k, n]`). `k` is walked in
/// blocks of [`KC`], so that each block of `e` (`[m, KC]`, a few hundred
/// KiB) comes from memory once and serves both products from L2; the
/// scales go on the small operands (`d`'s rows, `e @ b`'s rows), never on
/// `e`.
///
/// Tasks are fixed parts of `k`: each adds its blocks into its own rows of
/// `etd` and into its own partial `eb`; the partials are then added in part
/// order, so the result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_both_sides(
    m: usize,
    k: usize,
    n: usize,
    e: &[f32],
    scales: &[f32],
    b: &[f32],
    eb: &mut [f32],
    d: &[f32],
    etd: &mut [f32],
) {
    both_sides_with(Isa::detect(), m, k, n, e, scales, b, eb, d, etd);
}

#[allow(clippy::too_many_arguments)]
fn both_sides_with(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    e: &[f32],
    scales: &[f32],
    b: &[f32],
    eb: &mut [f32],
    d: &[f32],
    etd: &mut [f32],
) {
    check_sizes(m, k, n, e.len(), b.len(), eb.len());
    check_sizes(k, m, n, e.len(), d.len(), etd.len());
    let scale_blocks = k.div_ceil(NC);
    assert_eq!(
        scales.len(),
        m * scale_blocks,
        "gemm: scales are not [m, k / NC]"
    );
    eb.fill(0.0);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let blocks = k.div_ceil(KC);
    let part_len = blocks.div_ceil(blocks.min(MAX_TASKS)) * KC;
    let parts = k.div_ceil(part_len);
    let mut partials = vec![0.0f32; parts * m * n];
    let (partial_ptr, etd_ptr) = (
        SharedMut(partials.as_mut_ptr()),
        SharedMut(etd.as_mut_ptr()),
    );
    (0..parts).into_par_iter().for_each(|part| {
        // SAFETY: this task alone writes its partial.
        let partial =
            unsafe { std::slice::from_raw_parts_mut(partial_ptr.offset(part * m * n).0, m * n) };
        let (mut block_eb, mut scaled_d) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
        let ks = part * part_len..((part + 1) * part_len).min(k);
        for p0 in ks.clone().step_by(KC) {
            let block = p0..(p0 + KC).min(ks.end);
            // Blocks of KC never straddle blocks of NC (NC is a multiple).
            let scale = |r: usize| scales[r * scale_blocks + p0 / NC];
            for (r, (out, d)) in scaled_d
                .chunks_exact_mut(n)
                .zip(d.chunks_exact(n))
                .enumerate()
            {
                let s = scale(r);
                out.iter_mut().zip(d).for_each(|(o, &x)| *o = s * x);
            }
            let e_times_b = Job {
                a: Strided::new(e, false, m, k),
                b: BSource::InPlace { data: b, rs: n },
                c: SharedMut(block_eb.as_mut_ptr()),
                ldc: n,
                beta: 0.0,
                finish: None,
            };
            let e_t_times_d = Job {
                a: Strided::new(e, true, k, m),
                b: BSource::InPlace {
                    data: &scaled_d,
                    rs: n,
                },
                c: etd_ptr,
                ldc: n,
                beta: 1.0,
                finish: None,
            };
            // SAFETY: the block lies inside `k`; this task alone writes its
            // buffers and the block's rows of `etd`.
            unsafe {
                e_times_b.run(isa, 0..m, 0..n, block.clone());
                e_t_times_d.run(isa, block, 0..n, 0..m);
            }
            for (r, (out, x)) in partial
                .chunks_exact_mut(n)
                .zip(block_eb.chunks_exact(n))
                .enumerate()
            {
                let s = scale(r);
                out.iter_mut().zip(x).for_each(|(o, &x)| *o += s * x);
            }
        }
    });
    add_partials(eb, &partials, m * n, parts, n);
}

fn check_sizes(m: usize, k: usize, n: usize, a: usize, b: usize, c: usize) {
    assert_eq!(a, m * k, "gemm: a has {a} values, not {m}x{k}");
    assert_eq!(b, k * n, "gemm: b has {b} values, not {k}x{n}");
    assert_eq!(c, m * n, "gemm: c has {c} values, not {m}x{n}");
}

/// matrixmultiply's sgemm (it reads both operands through their strides).
fn portable(
    m: usize,
    k: usize,
    n: usize,
    a: Strided<'_>,
    b: Strided<'_>,
    beta: f32,
    c: &mut [f32],
) {
    // SAFETY: `check_sizes` made every index the strides reach lie in its
    // slice, and `c` is a unique borrow, so it aliases neither input.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// How a product is cut into tasks: groups of `group_rows` rows x blocks of
/// [`NC`] columns x `parts` ranges of `k` (each a whole number of [`KC`]
/// blocks). A function of the sizes alone.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Plan {
    group_rows: usize,
    row_groups: usize,
    col_blocks: usize,
    /// Values of `k` per part (the last may be shorter).
    part_len: usize,
    parts: usize,
}

impl Plan {
    /// With `split_k` false, every task sums the whole of `k` itself.
    fn new(m: usize, k: usize, n: usize, mr: usize, split_k: bool) -> Plan {
        let flops = 2 * m * k * n;
        let target = (flops / TASK_FLOPS).clamp(1, MAX_TASKS);
        let tiles = m.div_ceil(mr);
        let col_blocks = n.div_ceil(NC);
        // Rows first: split them until there are enough tasks, keeping
        // groups of several tiles when `k` spans blocks (see MIN_GROUP_ROWS).
        let groups_wanted = target.div_ceil(col_blocks);
        let mut group_tiles = tiles.div_ceil(groups_wanted).max(1);
        if k > KC {
            group_tiles = group_tiles.max(MIN_GROUP_ROWS.div_ceil(mr)).min(tiles);
        }
        let group_rows = group_tiles * mr;
        let row_groups = m.div_ceil(group_rows);
        // Then `k`, in whole blocks, when rows and columns give too few.
        let tasks = row_groups * col_blocks;
        let blocks = k.div_ceil(KC);
        let parts = if split_k && tasks < target {
            target.div_ceil(tasks).min(blocks).max(1)
        } else {
            1
        };
        let part_len = blocks.div_ceil(parts) * KC;
        Plan {
            group_rows,
            row_groups,
            col_blocks,
            part_len,
            parts: k.div_ceil(part_len).max(1),
        }
    }

    fn tasks(&self) -> usize {
        self.row_groups * self.col_blocks * self.parts
    }
}

/// Runs the tasks of [`Plan`] on rayon's pool (inline when there is one),
/// then `finish` on every row of every column block (inside the tasks, as
/// each row tile is done).
#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: Strided<'_>,
    b: BSource<'_>,
    beta: f32,
    c: &mut [f32],
    finish: Option<Finish<'_>>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale(c, beta);
        if let Some(finish) = finish {
            finish_all(n, c, finish);
        }
        return;
    }
    let (mr, _) = isa.tile();
    let plan = Plan::new(m, k, n, mr, finish.is_none());
    // Part 0 goes straight into `c` (with beta); parts 1.. into their own
    // buffers, added to `c` in part order afterwards.
    let mut partials = vec![0.0f32; (plan.parts - 1) * m * n];
    let (c_ptr, partial_ptr) = (SharedMut(c.as_mut_ptr()), SharedMut(partials.as_mut_ptr()));
    let task = |t: usize| {
        let part = t % plan.parts;
        let block = (t / plan.parts) % plan.col_blocks;
        let group = t / (plan.parts * plan.col_blocks);
        let rows = group * plan.group_rows..((group + 1) * plan.group_rows).min(m);
        let cols = block * NC..((block + 1) * NC).min(n);
        let ks = part * plan.part_len..((part + 1) * plan.part_len).min(k);
        let (out, out_beta) = if part == 0 {
            (c_ptr, beta)
        } else {
            (partial_ptr.offset((part - 1) * m * n), 0.0)
        };
        let job = Job {
            a,
            b,
            c: out,
            ldc: n,
            beta: out_beta,
            finish,
        };
        // SAFETY: the task's rows, columns and k range lie inside the
        // operands (checked by the callers' size asserts), and its output
        // elements are its own (see `SharedMut`).
        unsafe { job.run(isa, rows, cols, ks) };
    };
    let tasks = plan.tasks();
    if tasks == 1 {
        task(0);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
    if plan.parts > 1 {
        add_partials(c, &partials, m * n, plan.parts - 1, n);
    }
}

/// `finish` on every row of every column block of `c` `[rows, n]`.
fn finish_all(n: usize, c: &mut [f32], finish: Finish<'_>) {
    if n == 0 {
        return;
    }
    super::par::for_each_chunk(c, n, |row, values| {
        for (block, values) in values.chunks_mut(NC).enumerate() {
            finish(row, block, values);
        }
    });
}

/// `c *= beta` (`c = 0` for beta 0, whatever `c` held).
fn scale(c: &mut [f32], beta: f32) {
    if beta == 0.0 {
        c.fill(0.0);
    } else if beta != 1.0 {
        c.iter_mut().for_each(|v| *v *= beta);
    }
}

/// `c += partial[0] + partial[1] + ...`, in that order, parallel over rows.
fn add_partials(c: &mut [f32], partials: &[f32], len: usize, count: usize, n: usize) {
    let rows = (super::par::PAR_MIN_ELEMS / n.max(1)).max(1) * n;
    super::par::for_each_chunk(c, rows, |i, out| {
        let start = i * rows;
        for p in 0..count {
            let src = &partials[p * len + start..][..out.len()];
            for (o, &v) in out.iter_mut().zip(src) {
                *o += v;
            }
        }
    });
}

impl Job<'_> {
    /// # Safety
    /// `rows x cols` and `ks` must lie inside the product's sizes, and no
    /// other thread may write those elements of `c` meanwhile.
    unsafe fn run(
        &self,
        isa: Isa,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        ks: std::ops::Range<usize>,
    ) {
        match isa {
            // SAFETY: `Isa::detect` (or a test) checked the CPU features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::run(self, rows, cols, ks) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::run(self, rows, cols, ks) },
            _ => unsafe { self.portable(rows, cols, ks) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Checks `sgemm_with(isa, ..)` against an f64 product, element by
    /// element, within the worst-case rounding of a k-term f32 sum:
    /// `|c - exact| <= 1.01 k eps sum_p |a_ip b_pj| + |beta c_old| eps`.
    #[allow(clippy::too_many_arguments)]
    fn check(isa: Isa, m: usize, k: usize, n: usize, ta: bool, tb: bool, beta: f32) {
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let old = values(m * n, 3);
        let mut c = if beta == 0.0 {
            vec![f32::NAN; m * n]
        } else {
            old.clone()
        };
        sgemm_with(isa, m, k, n, &a, ta, &b, tb, beta, &mut c);
        let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] } as f64;
        let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] } as f64;
        let eps = f32::EPSILON as f64;
        for i in 0..m {
            for j in 0..n {
                let (mut exact, mut abs) = (0.0f64, 0.0f64);
                for p in 0..k {
                    exact += at(i, p) * bt(p, j);
                    abs += (at(i, p) * bt(p, j)).abs();
                }
                let prior = if beta == 0.0 {
                    0.0
                } else {
                    beta as f64 * old[i * n + j] as f64
                };
                let got = c[i * n + j] as f64;
                let bound = 1.01 * k as f64 * eps * abs + 2.0 * eps * prior.abs() + 1e-30;
                assert!(
                    (got - (exact + prior)).abs() <= bound,
                    "{isa:?} m={m} k={k} n={n} ta={ta} tb={tb} beta={beta}: c[{i},{j}] = {got}, expected {} (bound {bound})",
                    exact + prior
                );
            }
        }
    }

    #[test]
    fn every_kernel_matches_f64_on_edges_transposes_and_betas() {
        let shapes = [
            (1, 1, 1),
            (5, 3, 7),
            (6, 64, 64),
            (13, 70, 65),
            (7, 600, 17),
            (2, 5, 1030),
            (4, 0, 3),
        ];
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
            if !isa.supported() {
                eprintln!("skipping {isa:?}: not supported by this CPU");
                continue;
            }
            for &(m, k, n) in &shapes {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    for beta in [0.0, 1.0, 0.5] {
                        check(isa, m, k, n, ta, tb, beta);
                    }
                }
            }
        }
    }

    #[test]
    fn large_products_split_into_tasks_and_k_parts_are_exact_enough() {
        // k parts (few rows and columns, long k) and column blocks.
        assert!(Plan::new(64, 9000, 64, 6, true).parts > 1);
        assert!(Plan::new(60, 64, 3000, 6, true).col_blocks > 1);
        for isa in [Isa::Avx512, Isa::Avx2] {
            if isa.supported() {
                check(isa, 64, 9000, 64, false, false, 1.0);
                check(isa, 60, 64, 3000, false, true, 0.0);
                check(isa, 300, 40, 64, true, false, 1.0);
            }
        }
    }

    #[test]
    fn packed_b_gives_the_same_bits_as_packing_per_call() {
        let (m, k, n) = (20, 64, NC + 300);
        let (a, b) = (values(m * k, 4), values(k * n, 5));
        let packed = PackedB::new(&b, true, k, n);
        let (mut c1, mut c2) = (vec![0.0; m * n], vec![0.0; m * n]);
        sgemm(m, k, n, &a, false, &b, true, 0.0, &mut c1);
        // `finish` sees each row of each column block once, complete.
        let mut sums = vec![0.0f32; m * n.div_ceil(NC)];
        sgemm_packed_rows(m, k, n, &a, &packed, &mut c2, &mut sums, |_, _, v| {
            v.iter().sum()
        });
        assert!(c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()));
        for (row, sums) in sums.chunks(n.div_ceil(NC)).enumerate() {
            for (block, &s) in sums.iter().enumerate() {
                let values = &c1[row * n..][..n][block * NC..((block + 1) * NC).min(n)];
                assert_eq!(s, values.iter().sum::<f32>());
            }
        }
    }

    #[test]
    fn both_sides_matches_two_products_and_any_thread_count() {
        // Several parts of k and blocks of scales, odd sizes, a row count
        // that is not a tile multiple.
        let (m, k, n) = (13, 2 * NC + 3 * KC + 77, 37);
        let blocks = k.div_ceil(NC);
        let (e, b, d) = (values(m * k, 9), values(k * n, 10), values(m * n, 11));
        let scales: Vec<f32> = values(m * blocks, 12).iter().map(|v| 1.5 + v).collect();
        let etd_old = values(k * n, 13);
        let run = |isa, threads| {
            let (mut eb, mut etd) = (vec![f32::NAN; m * n], etd_old.clone());
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| both_sides_with(isa, m, k, n, &e, &scales, &b, &mut eb, &d, &mut etd));
            (eb, etd)
        };
        let scaled: Vec<f32> = (0..m * k)
            .map(|i| e[i] * scales[(i / k) * blocks + (i % k) / NC])
            .collect();
        let (mut eb_ref, mut etd_ref) = (vec![0.0; m * n], etd_old.clone());
        sgemm(m, k, n, &scaled, false, &b, false, 0.0, &mut eb_ref);
        sgemm(k, m, n, &scaled, true, &d, false, 1.0, &mut etd_ref);
        let close = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()))
        };
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
            if !isa.supported() {
                continue;
            }
            let (eb, etd) = run(isa, 1);
            assert!(close(&eb, &eb_ref), "{isa:?}: e @ b");
            assert!(close(&etd, &etd_ref), "{isa:?}: e^T @ d");
            if isa != Isa::Portable {
                let (eb2, etd2) = run(isa, 3);
                let same =
                    |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same(&eb, &eb2) && same(&etd, &etd2),
                    "{isa:?}: threads differ"
                );
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_thread_count() {
        // Long k (parts), many rows (groups), many columns (blocks).
        let shapes = [(96, 20_000, 64), (3000, 100, 64), (120, 64, 5000)];
        for (m, k, n) in shapes {
            let (a, b) = (values(m * k, 6), values(k * n, 7));
            let product = || {
                let mut c = values(m * n, 8);
                sgemm(m, k, n, &a, m == 3000, &b, n == 5000, 1.0, &mut c);
                c
            };
            let on = |threads| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(product)
            };
            let one = on(1);
            for threads in [2, 3, 8] {
                let other = on(threads);
                assert!(
                    one.iter()
                        .zip(&other)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{m}x{k}x{n}: 1 and {threads} threads differ"
                );
            }
        }
    }
}
