//! Softmax cross-entropy: fused with the tied output layer and chunked over
//! rows (`cross_entropy`), and over a logits matrix (`softmax_cross_entropy`).
//! Both compute each row's exp and sum with the same kernel, `exp_row`.
//!
//! The fused form packs `table^T` once, then for each chunk of rows whose
//! target is not 0 (ignored rows cost nothing):
//!
//! ```text
//! z = h_chunk @ table^T, and per row and block b of NC columns, while the
//!     block is in cache: m_b = max, z = exp(z - m_b), s_b = sum  [chunk, vocab]
//! per row: M = max m_b, S = sum s_b e^(m_b - M), loss += ln S + M - z_target
//!          scale_b = e^(m_b - M) / (S count)       (so scale * z = softmax / count)
//! dh_chunk = (scale z) @ table - table[target] / count    [chunk, dim]
//! dtable  += (scale z)^T @ h_chunk; dtable[target] -= h_chunk / count
//! ```
//!
//! The two backward products walk `z` block by block together
//! (`sgemm_both_sides`), the scales going on the small operands. The order
//! of the sums is fixed by the sizes (see docs/numerics.md).
//!
//! Peak memory is one `[chunk, vocab]` buffer of at most [`CE_BUFFER_BYTES`]
//! (or one row, if a row is larger) plus the outputs, never `rows x vocab`.

use super::bf16::Bf16Kernel;
use super::output_layer::OutputProducts;
use super::par::{for_each_chunk, for_each_chunk2};
use super::profile::Laps;
use super::sgemm::NC;
use super::simd::simd_dispatch;
use super::tensor::{CpuIds, CpuTensor};
use crate::{CrossEntropy, SoftmaxCrossEntropy, contract};

/// Byte budget of the reusable logits buffer.
pub const CE_BUFFER_BYTES: usize = 64 << 20;

/// Rows per chunk at most. Each chunk reads and rewrites all of `dtable`
/// and its `dtable` product's inner size is the chunk's row count, so
/// thin chunks are slow: at 40k items, 1 thread, the fused cross-entropy
/// took 1.19-1.30 s in chunks of 128 rows and 0.97-1.01 s in chunks of
/// 384-1,024 (docs/benchmarks.md).
pub const CE_CHUNK_ROWS: usize = 512;

/// Rows per chunk for a vocabulary of `vocab` columns: as many as fit
/// [`CE_BUFFER_BYTES`], at least 1 and at most [`CE_CHUNK_ROWS`].
pub fn ce_chunk_rows(vocab: usize) -> usize {
    (CE_BUFFER_BYTES / (size_of::<f32>() * vocab.max(1))).clamp(1, CE_CHUNK_ROWS)
}

/// Largest element of `z` (sixteen lanes, so it vectorises). NaNs are
/// skipped; they come back through `exp(NaN - max)`.
#[inline(always)]
pub(super) fn max_of(z: &[f32]) -> f32 {
    // `if x > m` rather than `m.max(x)`: the same result (a NaN `x` leaves
    // `m`, and `m` is never NaN), but one `maxps` per vector instead of
    // three instructions that give NaN operands `f32::max`'s meaning.
    let keep_larger = |m: f32, x: f32| if x > m { x } else { m };
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = z.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| keep_larger(a, b));
    for c in chunks {
        for l in 0..LANES {
            m[l] = keep_larger(m[l], c[l]);
        }
    }
    m.iter().fold(tail, |a, &b| keep_larger(a, b))
}

/// Independent partial maxima and sums per row: one AVX-512 register, two
/// AVX2 ones.
const LANES: usize = 16;

/// `e^x` for `x <= 0` (larger `x` is not supported), within 2 ulp, written
/// with plain float and integer ops so that loops over it vectorise.
/// `f32::exp` is a libm call per element, 2.5x (SSE2) to 4x (AVX2) slower,
/// and the softmax evaluates rows x vocab of them. Below -87.3 the result
/// flushes to 0 instead of a subnormal: the softmax sum is >= 1, so nothing
/// is lost. NaN gives NaN.
///
/// `e^x = 2^n e^r` with `n = round(x / ln 2)` and `|r| <= ln(2) / 2`; `e^r`
/// from Cephes' `expf` minimax polynomial, `ln 2` split in two for an exact
/// reduction, `2^n` built from its exponent bits. With `FMA` the reduction
/// and the polynomial use fused multiply-adds (only where `simd_dispatch!`
/// compiles for FMA): nine of some thirty vector operations per value
/// fewer.
#[inline(always)]
pub(super) fn exp_nonpositive<const FMA: bool>(x: f32) -> f32 {
    // a * b + c, rounded once with FMA.
    let mad = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    // Adding 1.5 * 2^23 rounds to an integer (ties to even) and leaves it in
    // the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const MIN_X: f32 = -87.3;
    let flush = x < MIN_X;
    // Not `x.max(MIN_X)`, which turns NaN into MIN_X: a select on the same
    // comparison keeps NaN, and NaN then flows through to the result.
    let x = if flush { MIN_X } else { x };
    let t = mad(x, std::f32::consts::LOG2_E, ROUND);
    let n = t - ROUND;
    let r = mad(n, 2.121_944_4e-4, mad(n, -0.693_359_4, x));
    let mut p = 1.987_569_1e-4f32;
    p = mad(p, r, 1.398_2e-3);
    p = mad(p, r, 8.333_452e-3);
    p = mad(p, r, 4.166_579_6e-2);
    p = mad(p, r, 1.666_666_5e-1);
    p = mad(p, r, 0.5);
    let er = mad(p * r, r, r) + 1.0;
    // bits(t) = bits(ROUND) + n; 2^n has exponent field n + 127.
    let two_n = f32::from_bits((t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23);
    if flush { 0.0 } else { er * two_n }
}

/// `z[j] = exp(z[j] - max)` in place; returns the sum (sixteen partial
/// sums, added in a fixed order). One pass: with the sum kept in
/// independent lanes, the exp and the sum vectorise together.
#[inline(always)]
pub(super) fn exp_shifted_sum<const FMA: bool>(z: &mut [f32], max: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = z.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            c[l] = exp_nonpositive::<FMA>(c[l] - max);
            acc[l] += c[l];
        }
    }
    let mut tail = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp_nonpositive::<FMA>(*v - max);
        tail += *v;
    }
    acc.iter().sum::<f32>() + tail
}

simd_dispatch! {
    /// One row of logits: overwrites `z` with `exp(z - max(z))` and returns
    /// `max(z)` and the sum of the new `z`.
    fn exp_row = exp_row_body::<FMA>(z: &mut [f32]) -> (f32, f32)
}

#[inline(always)]
fn exp_row_body<const FMA: bool>(z: &mut [f32]) -> (f32, f32) {
    let max = max_of(z);
    // All -inf (or empty): every exp is 0, not exp(-inf + inf) = NaN.
    let shift = if max == f32::NEG_INFINITY { 0.0 } else { max };
    (max, exp_shifted_sum::<FMA>(z, shift))
}

/// One row: returns `logsumexp(z) - z[target]` and leaves `exp(z - max)`
/// in `z`, whose sum is `sum`: the softmax is `z / sum`.
fn softmax_xent_row(z: &mut [f32], target: usize) -> RowStats {
    let z_target = z[target];
    let (max, sum) = exp_row(z);
    RowStats {
        loss: (sum as f64).ln() + (max as f64 - z_target as f64),
        sum,
    }
}

/// What [`softmax_xent_row`] returns for one row.
#[derive(Clone, Copy, Default)]
struct RowStats {
    loss: f64,
    sum: f32,
}

/// What the logits product leaves for one row and one block of
/// [`NC`] columns: the block's largest logit, the sum of `exp(z - max)`
/// over it, the target's logit if the target is in the block, and (with
/// label smoothing) the sum of the block's logits.
#[derive(Clone, Copy, Default)]
struct BlockStats {
    max: f32,
    sum: f32,
    target: Option<f32>,
    logit_sum: f64,
}

/// The fused cross-entropy of `Backend::cross_entropy`, working through the
/// non-ignored rows `chunk_rows` at a time (the backend uses
/// [`ce_chunk_rows`]; tests pass small values to exercise chunk edges).
///
/// h `[rows, dim]`, table `[vocab, dim]`, targets `[rows]` (0 = ignored).
pub fn cross_entropy_chunked(
    h: &CpuTensor,
    table: &CpuTensor,
    targets: &CpuIds,
    with_grad: bool,
    chunk_rows: usize,
) -> CrossEntropy<CpuTensor> {
    fused(h, table, targets, 0.0, with_grad, chunk_rows, None)
}

/// [`cross_entropy_chunked`] with label smoothing (`Backend::cross_entropy_smoothed`).
///
/// The smoothing's share of the gradient, `-smoothing / vocab` on every
/// logit, is added outside the products: `dh` gets `-g smoothing
/// mean(table rows)` per row and `dtable` gets `-g smoothing / vocab
/// sum(h rows)` on every row (`g` = 1 / count), rank-one terms that cost no
/// pass over the logits.
pub fn cross_entropy_smoothed_chunked(
    h: &CpuTensor,
    table: &CpuTensor,
    targets: &CpuIds,
    smoothing: f32,
    with_grad: bool,
    chunk_rows: usize,
) -> CrossEntropy<CpuTensor> {
    fused(h, table, targets, smoothing, with_grad, chunk_rows, None)
}

/// [`cross_entropy_chunked`] with its three products in bf16 on `kernel`
/// (`Precision::Bf16`; see `bf16.rs`).
///
/// # Panics
/// If this CPU cannot run `kernel` ([`Bf16Kernel::supported`]).
pub fn cross_entropy_chunked_bf16(
    h: &CpuTensor,
    table: &CpuTensor,
    targets: &CpuIds,
    with_grad: bool,
    chunk_rows: usize,
    kernel: Bf16Kernel,
) -> CrossEntropy<CpuTensor> {
    fused(h, table, targets, 0.0, with_grad, chunk_rows, Some(kernel))
}

/// The fused cross-entropy with label smoothing `smoothing` (0: none), its
/// products in f32 or, with `bf16`, in bf16 on that kernel.
pub(super) fn fused(
    h: &CpuTensor,
    table: &CpuTensor,
    targets: &CpuIds,
    smoothing: f32,
    with_grad: bool,
    chunk_rows: usize,
    bf16: Option<Bf16Kernel>,
) -> CrossEntropy<CpuTensor> {
    let targets = targets.as_slice();
    let contract::CrossEntropyDims { rows, dim, vocab } =
        contract::cross_entropy_smoothed(h.shape(), table.shape(), targets, smoothing);
    assert!(chunk_rows > 0, "cross_entropy: chunk_rows must be positive");
    let smoothed = smoothing > 0.0;

    let mut laps = Laps::start();
    let (h, table) = (h.data(), table.data());
    let active: Vec<usize> = (0..rows).filter(|&r| targets[r] != 0).collect();
    let count = active.len();
    let mut dh = with_grad.then(|| vec![0.0f32; rows * dim]);
    let mut dtable = with_grad.then(|| vec![0.0f32; vocab * dim]);

    let chunk = chunk_rows.min(count);
    let blocks = vocab.div_ceil(NC);
    let g = 1.0 / count as f32;
    // The logits product reads the table transposed: pack it once for all chunks.
    let mut products = OutputProducts::new(bf16, table, dim, vocab, chunk, with_grad);
    let mut h_chunk = vec![0.0f32; chunk * dim];
    let mut dh_chunk = vec![0.0f32; if with_grad { chunk * dim } else { 0 }];
    let mut block_stats = vec![BlockStats::default(); chunk * blocks];
    let mut scales = vec![0.0f32; chunk * blocks];
    let mut loss_sum = 0.0f64;
    laps.lap("cross_entropy.setup");
    for part in active.chunks(chunk.max(1)) {
        let c = part.len();
        let hc = &mut h_chunk[..c * dim];
        let (block_stats, scales) = (&mut block_stats[..c * blocks], &mut scales[..c * blocks]);
        for (dst, &r) in hc.chunks_exact_mut(dim.max(1)).zip(part) {
            dst.copy_from_slice(&h[r * dim..(r + 1) * dim]);
        }
        // Logits, and the softmax's exp of each block of them while the
        // block is in cache: z = exp(z - block max).
        products.logits(c, hc, block_stats, |i, block, z| {
            let target = (targets[part[i]] as usize).checked_sub(block * NC);
            let target = target.and_then(|t| z.get(t).copied());
            let logit_sum = if smoothed {
                z.iter().map(|&v| v as f64).sum()
            } else {
                0.0
            };
            let (max, sum) = exp_row(z);
            BlockStats {
                max,
                sum,
                target,
                logit_sum,
            }
        });
        laps.lap("cross_entropy.logits");

        // Per row: max over blocks M, sum S = sum_b sum_b e^(max_b - M),
        // loss = ln S + M - z[target]; the softmax is z e^(max_b - M) / S,
        // and scales[row, b] = g e^(max_b - M) / S makes it dlogits (less
        // the one-hot part) in the products below.
        for (stats, scales) in block_stats
            .chunks_exact(blocks)
            .zip(scales.chunks_exact_mut(blocks))
        {
            let max = stats.iter().fold(f32::NEG_INFINITY, |m, b| m.max(b.max));
            let shifts: Vec<f32> = stats.iter().map(|b| (b.max - max).exp()).collect();
            let sum: f32 = stats.iter().zip(&shifts).map(|(b, f)| b.sum * f).sum();
            let z_target = stats
                .iter()
                .find_map(|b| b.target)
                .expect("the target is in a block");
            let lse = (sum as f64).ln() + max as f64;
            loss_sum += if smoothed {
                // PyTorch's label smoothing: (1 - e) nll + e mean(-log softmax).
                let mean = stats.iter().map(|b| b.logit_sum).sum::<f64>() / vocab as f64;
                let e = smoothing as f64;
                lse - (1.0 - e) * z_target as f64 - e * mean
            } else {
                (sum as f64).ln() + (max as f64 - z_target as f64)
            };
            for (s, f) in scales.iter_mut().zip(&shifts) {
                *s = g * f / sum;
            }
        }
        laps.lap("cross_entropy.softmax");

        if let (Some(dh), Some(dtable)) = (dh.as_mut(), dtable.as_mut()) {
            // dlogits = scales * z - g onehot(target): the products take
            // scales * z, the one-hot part is one row of the table (for dh)
            // or of h (for dtable) per row.
            let dhc = &mut dh_chunk[..c * dim];
            products.backward(c, scales, table, hc, dhc, dtable);
            // The target's weight: 1, or 1 - smoothing.
            let gt = g * (1.0 - smoothing);
            for (i, &r) in part.iter().enumerate() {
                let t = targets[r] as usize;
                let t_row = &table[t * dim..(t + 1) * dim];
                let out = &mut dh[r * dim..(r + 1) * dim];
                for ((o, &e), &w) in out.iter_mut().zip(&dhc[i * dim..(i + 1) * dim]).zip(t_row) {
                    *o = e - gt * w;
                }
                let dt_row = &mut dtable[t * dim..(t + 1) * dim];
                for (o, &x) in dt_row.iter_mut().zip(&hc[i * dim..(i + 1) * dim]) {
                    *o -= gt * x;
                }
            }
            laps.lap("cross_entropy.backward");
        }
    }

    if let Some(dtable) = dtable.as_mut() {
        products.finish(dtable);
    }
    if let (true, Some(dh), Some(dtable)) = (smoothed && count > 0, dh.as_mut(), dtable.as_mut()) {
        smoothing_gradients(h, table, &active, dim, g * smoothing, dh, dtable);
    }

    let loss = if count == 0 {
        0.0
    } else {
        (loss_sum / count as f64) as f32
    };
    CrossEntropy {
        loss: CpuTensor::new(vec![loss], &[1]),
        count,
        dh: dh.map(|d| CpuTensor::new(d, &[rows, dim])),
        dtable: dtable.map(|d| CpuTensor::new(d, &[vocab, dim])),
    }
}

/// The uniform part of label smoothing's gradient, `-ge / vocab` on every
/// logit of the `active` rows (`ge` = smoothing / count): `dh[r] -= ge *
/// mean(table rows)` and `dtable[j] -= ge / vocab * sum(h[active])`.
fn smoothing_gradients(
    h: &[f32],
    table: &[f32],
    active: &[usize],
    dim: usize,
    ge: f32,
    dh: &mut [f32],
    dtable: &mut [f32],
) {
    let vocab = table.len() / dim.max(1);
    let mut table_mean = vec![0.0f64; dim];
    for row in table.chunks_exact(dim.max(1)) {
        table_mean
            .iter_mut()
            .zip(row)
            .for_each(|(m, &v)| *m += v as f64);
    }
    let table_mean: Vec<f32> = table_mean
        .iter()
        .map(|&m| (m / vocab as f64) as f32)
        .collect();
    let mut h_sum = vec![0.0f64; dim];
    for &r in active {
        let out = &mut dh[r * dim..(r + 1) * dim];
        out.iter_mut()
            .zip(&table_mean)
            .for_each(|(o, &m)| *o -= ge * m);
        let row = &h[r * dim..(r + 1) * dim];
        h_sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
    }
    let h_term: Vec<f32> = h_sum
        .iter()
        .map(|&s| (s / vocab as f64) as f32 * ge)
        .collect();
    for_each_chunk(dtable, dim.max(1), |_, row| {
        row.iter_mut().zip(&h_term).for_each(|(o, &t)| *o -= t);
    });
}

/// Softmax cross-entropy of `logits` `[rows, classes]` against `targets`,
/// rows whose target is `ignore_index` left out (see
/// `Backend::softmax_cross_entropy`).
pub(super) fn softmax_cross_entropy(
    logits: &CpuTensor,
    targets: &CpuIds,
    ignore_index: Option<u32>,
    with_grad: bool,
) -> SoftmaxCrossEntropy<CpuTensor> {
    let targets = targets.as_slice();
    let (rows, classes) = contract::softmax_cross_entropy(logits.shape(), targets, ignore_index);
    let kept = |r: usize| Some(targets[r]) != ignore_index;
    let count = (0..rows).filter(|&r| kept(r)).count();
    let g = 1.0 / count as f32;
    // The row kernel works in place: on the copy that becomes dlogits.
    let mut z = logits.data().to_vec();
    let mut row_loss = vec![0.0f64; rows];
    for_each_chunk2(&mut z, classes, &mut row_loss, 1, |r, z, loss| {
        if kept(r) {
            let st = softmax_xent_row(z, targets[r] as usize);
            loss[0] = st.loss;
            if with_grad {
                // g * (softmax - onehot(target)).
                let s = g / st.sum;
                z.iter_mut().for_each(|v| *v *= s);
                z[targets[r] as usize] -= g;
            }
        } else {
            z.fill(0.0);
        }
    });
    // Sequential f64 sum in row order: deterministic and accurate.
    let loss = if count == 0 {
        0.0
    } else {
        (row_loss.iter().sum::<f64>() / count as f64) as f32
    };
    SoftmaxCrossEntropy {
        loss: CpuTensor::new(vec![loss], &[1]),
        count,
        dlogits: with_grad.then(|| CpuTensor::new(z, &[rows, classes])),
    }
}

#[cfg(test)]
mod tests {
    use super::super::simd::{Level, with_level};
    use super::{exp_nonpositive, exp_row};

    #[test]
    fn fma_builds_give_the_same_bits_and_the_baseline_is_within_4_ulp() {
        // `exp_row` runs the AVX-512, AVX2 + FMA or baseline build of the
        // same code (each where the CPU has it; `with_level` caps the
        // choice). The first two fuse the exp's multiply-adds.
        let z: Vec<f32> = (0..1001)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.7)
            .collect();
        let run = |level| {
            let mut z = z.clone();
            let (max, sum) = with_level(level, || exp_row(&mut z));
            (max, sum, z)
        };
        let bits = |(max, sum, z): (f32, f32, Vec<f32>)| {
            let z: Vec<u32> = z.iter().map(|v| v.to_bits()).collect();
            (max.to_bits(), sum.to_bits(), z)
        };
        let fused = run(Level::Avx512);
        assert_eq!(bits(run(Level::Avx2)), bits(fused.clone()));
        // Each exp is within 2 ulp of the exact value, so the two within 4
        // of each other; the sums add them in the same order.
        let plain = run(Level::Baseline);
        assert_eq!(plain.0, fused.0);
        for (a, b) in plain.2.iter().zip(&fused.2) {
            assert!((a - b).abs() <= 4.0 * f32::EPSILON * a.abs(), "{a} vs {b}");
        }
        assert!((plain.1 - fused.1).abs() <= 1e-5 * plain.1);
    }

    #[test]
    fn fast_exp_within_two_ulp_of_f64() {
        fn check(exp: fn(f32) -> f32) {
            let mut worst = 0.0f64;
            let n = 1_000_003;
            for i in 0..=n {
                let x = -87.3f32 * (i as f32 / n as f32);
                let exact = (x as f64).exp();
                let got = exp(x) as f64;
                worst = worst.max((got - exact).abs() / (f32::EPSILON as f64 * exact));
            }
            assert!(worst <= 2.0, "fast exp off by {worst} ulp");
            assert_eq!(exp(0.0), 1.0);
            assert_eq!(exp(-1000.0), 0.0);
            assert_eq!(exp(f32::NEG_INFINITY), 0.0);
            assert!(exp(f32::NAN).is_nan());
        }
        check(exp_nonpositive::<false>);
        check(exp_nonpositive::<true>);
    }
}
