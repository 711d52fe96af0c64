//! Softmax cross-entropy: fused with the tied output layer and chunked over
//! rows (`cross_entropy`), and over a logits matrix (`softmax_cross_entropy`).
//! Both compute each row's exp and sum with the same kernel, `exp_row`
//! (`exp_row_bf16` when the fused one's products are bf16).
//!
//! The fused form packs `table^T` once, then for each chunk of rows whose
//! target is not 0 (ignored rows cost nothing):
//!
//! ```text
//! z = h_chunk @ table^T, and per row and block b of columns (NC; the bf16
//!     products' BLOCK_COLS), while the block is in cache:
//!     m_b = max, z = exp(z - m_b), s_b = sum                      [chunk, vocab]
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

use super::bf16::{Bf16Kernel, BlockShift};
use super::output_layer::OutputProducts;
use super::par::{for_each_chunk, for_each_chunk2};
use super::profile::Laps;
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

/// Euclidean norm of `v`, in [`LANES`] independent partial sums so that
/// it vectorises (its f32 rounding, under 1e-5 relative at the model's
/// widths, is far inside [`EXP_WITHOUT_MAX_BOUND`]'s margin).
fn norm(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for c in v.chunks(LANES) {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x * x;
        }
    }
    acc.iter().sum::<f32>().sqrt()
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

/// The shift of [`exp_row_bf16`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum ExpShift {
    /// The row's maximum, found by a pass over it.
    Max,
    /// This value, with no pass for the maximum.
    Given(f32),
    /// 0 for logits known to lie within +-64 (see
    /// [`EXP_WITHOUT_MAX_BOUND`]): `e^z` with neither the subtraction nor
    /// the check for arguments below -87.3, the same values as
    /// `Given(0.0)` on that range.
    Bounded,
}

/// One row of logits of the bf16 products: as [`exp_row`], with an `exp`
/// of relative error below 3.2e-6 (2^-18) instead of 2 ulp, and `exp(z -
/// shift)` with the [`ExpShift`] asked for; returns the shift and the sum.
///
/// These logits come from products whose operands were rounded to 2^-8,
/// and their exps go on to be rounded to bf16 (2^-8) for the gradient
/// products, so the cheaper exp adds less than 1/1000 of the error already
/// there (docs/numerics.md). Any shift works that keeps every `z - shift`
/// at most 88 (`e^88` < f32's largest) and the sum finite: the fused
/// cross-entropy passes 0 when `|z|` is bounded by 64 (see
/// [`EXP_WITHOUT_MAX_BOUND`]), and otherwise, past a row's first block
/// of a slice, the larger of the block's maximum and the products' floor.
///
/// `e^x = 2^n e^r` as in [`exp_nonpositive`], with `ln 2` in one piece
/// (the reduction's error stays below 2.5e-7 for `|n| <= 127`), `e^r` from
/// a degree-4 polynomial fitted for relative error on `|r| <= ln(2) / 2`,
/// and `2^n` applied by `vscalefps`. Below -87.3 the result is 0, NaN
/// gives NaN, `e^0` is 1.
///
/// # Panics
/// If the CPU lacks AVX-512F (every CPU with a bf16 kernel has it).
pub(super) fn exp_row_bf16(z: &mut [f32], shift: ExpShift) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe {
            match shift {
                ExpShift::Max => x86::exp_row_bf16::<false>(z, max_of(z)),
                ExpShift::Given(shift) => x86::exp_row_bf16::<false>(z, shift),
                ExpShift::Bounded => x86::exp_row_bf16::<true>(z, 0.0),
            }
        };
    }
    let _ = (z, shift);
    panic!("the bf16 products' exp needs AVX-512F, which every bf16 kernel's CPU has")
}

/// A bound on `|logit|` under which the bf16 path's exp runs with shift 0
/// and no maximum: `e^64` times 2^32 items is still finite in f32, and
/// `e^-64` is far from f32's smallest normal. Checked per row through
/// Cauchy-Schwarz, `|h . t| <= |h| max |t|`, with bf16's rounding of both
/// operands (a factor below 1.01) and margin: `|h| max |t| <= 60`.
const EXP_WITHOUT_MAX_BOUND: f32 = 60.0;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `e^r = 1 + r (C1 + r (C2 + r (C3 + r C4)))` on `|r| <= ln(2) / 2`
    /// within 2.9e-6 relative (a least-squares fit reweighted to minimax).
    const C1: f32 = 0.999_966_86;
    const C2: f32 = 0.500_030_16;
    const C3: f32 = 0.167_874_55;
    const C4: f32 = 0.041_513_68;

    /// `e^x` of 16 lanes, `x <= 88` (see [`super::exp_row_bf16`]); with
    /// `BOUNDED`, `|x| <= 64`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp<const BOUNDED: bool>(x: __m512) -> __m512 {
        // Adding 1.5 * 2^23 rounds to an integer, as in `exp_nonpositive`.
        let round = _mm512_set1_ps(12_582_912.0);
        // Lanes to keep: x >= -87.3 or NaN (`NLT_UQ` is true for NaN).
        let keep = if BOUNDED {
            u16::MAX
        } else {
            _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(-87.3))
        };
        let t = _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), round);
        let n = _mm512_sub_ps(t, round);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(std::f32::consts::LN_2), x);
        let mut p = _mm512_fmadd_ps(_mm512_set1_ps(C4), r, _mm512_set1_ps(C3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C2));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C1));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        // -inf gives r = NaN; its lane, like every flushed one, is zeroed.
        _mm512_maskz_scalef_ps(keep, p, n)
    }

    /// `BOUNDED`: `max` is 0 and `|z| <= 64`, so `z - 0` is `z` (not
    /// computed) and no lane is flushed.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_row_bf16<const BOUNDED: bool>(z: &mut [f32], max: f32) -> (f32, f32) {
        // All -inf (or empty): every exp is 0, not exp(-inf + inf) = NaN.
        let shift = _mm512_set1_ps(if max == f32::NEG_INFINITY { 0.0 } else { max });
        let shifted = |x: __m512| if BOUNDED { x } else { _mm512_sub_ps(x, shift) };
        // Two sums, so that the adds' latency does not bound the loop.
        let mut sums = [_mm512_setzero_ps(); 2];
        let (n, ptr) = (z.len(), z.as_mut_ptr());
        let whole = n / 32 * 32;
        for i in (0..whole).step_by(32) {
            for (k, sum) in sums.iter_mut().enumerate() {
                // SAFETY: the 16 lanes from i + 16 k lie inside `z`.
                unsafe {
                    let at = ptr.add(i + 16 * k);
                    let e = exp::<BOUNDED>(shifted(_mm512_loadu_ps(at)));
                    _mm512_storeu_ps(at, e);
                    *sum = _mm512_add_ps(*sum, e);
                }
            }
        }
        for i in (whole..n).step_by(16) {
            let mask = (u32::MAX >> (32 - (n - i).min(16))) as __mmask16;
            // SAFETY: the mask's lanes lie inside `z`.
            unsafe {
                let e = exp::<BOUNDED>(shifted(_mm512_maskz_loadu_ps(mask, ptr.add(i))));
                _mm512_mask_storeu_ps(ptr.add(i), mask, e);
                sums[0] = _mm512_mask_add_ps(sums[0], mask, sums[0], e);
            }
        }
        (max, _mm512_reduce_add_ps(_mm512_add_ps(sums[0], sums[1])))
    }
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
/// columns: the block's shift `max` (its largest logit, or more: see
/// [`exp_row_bf16`]), the sum of `exp(z - max)` over it, the target's
/// logit if the target is in the block, and (with label smoothing) the sum
/// of the block's logits.
#[derive(Clone, Copy, Default)]
struct BlockStats {
    max: f32,
    sum: f32,
    target: Option<f32>,
    logit_sum: f64,
}

impl BlockShift for BlockStats {
    fn shift(&self) -> f32 {
        self.max
    }
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
    let g = 1.0 / count as f32;
    // With bf16 products: the largest norm of the table's rows, and per
    // row of a chunk Some(0.0) where |h| table_norm is within
    // `EXP_WITHOUT_MAX_BOUND`.
    let table_norm = bf16.map(|_| {
        table
            .chunks_exact(dim.max(1))
            .map(norm)
            .fold(0.0f32, |m, n| if n > m { n } else { m })
    });
    let mut bounded = vec![false; chunk];
    // The logits product reads the table transposed: pack it once for all chunks.
    let mut products = OutputProducts::new(bf16, table, dim, vocab, chunk, with_grad);
    let block_cols = products.block_cols();
    let blocks = vocab.div_ceil(block_cols);
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
        // A NaN in `h` fails the test (the maximum's pass); a NaN anywhere
        // reaches the loss either way, through exp(NaN) = NaN.
        if let Some(table_norm) = table_norm {
            for (bounded, row) in bounded.iter_mut().zip(hc.chunks_exact(dim.max(1))) {
                *bounded = norm(row) * table_norm <= EXP_WITHOUT_MAX_BOUND;
            }
        }
        // Logits, and the softmax's exp of each block of them while the
        // block is in cache: z = exp(z - shift), the shift the block's
        // maximum or the floor the products ask for, if larger (0 where
        // the row's bound allows).
        products.logits(c, hc, block_stats, |i, block, z, floor| {
            let target = (targets[part[i]] as usize).checked_sub(block * block_cols);
            let target = target.and_then(|t| z.get(t).copied());
            let logit_sum = if smoothed {
                z.iter().map(|&v| v as f64).sum()
            } else {
                0.0
            };
            // bf16 products round the logits far more than the cheaper exp does.
            let (max, sum) = match bf16 {
                Some(_) => {
                    let shift = if bounded[i] {
                        ExpShift::Bounded
                    } else if floor > f32::NEG_INFINITY {
                        ExpShift::Given(max_of(z).max(floor))
                    } else {
                        ExpShift::Max
                    };
                    exp_row_bf16(z, shift)
                }
                None => exp_row(z),
            };
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
            // (1 exactly for a block shifted by the row's maximum, as all
            // are with a known shift: then the scales are the same.)
            let shifts: Vec<f32> = stats
                .iter()
                .map(|b| {
                    if b.max == max {
                        1.0
                    } else {
                        (b.max - max).exp()
                    }
                })
                .collect();
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
    use super::{ExpShift, exp_nonpositive, exp_row, exp_row_bf16};

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

    #[test]
    fn bf16_products_exp_within_3_2e_6_of_f64() {
        #[cfg(target_arch = "x86_64")]
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let avx512 = false;
        if !avx512 {
            eprintln!("skipped the bf16 products' exp: this CPU has no AVX-512F");
            return;
        }
        // Every value from -87.3 to 0 in steps of 1e-4, max 0 (no shift).
        let n = 873_000;
        let mut z: Vec<f32> = (0..=n).map(|i| -87.3 * (i as f32 / n as f32)).collect();
        let exact: Vec<f64> = z.iter().map(|&x| (x as f64).exp()).collect();
        let (max, _) = exp_row_bf16(&mut z, ExpShift::Max);
        assert_eq!(max, 0.0);
        assert_eq!(z[0], 1.0, "e^0");
        let worst = z
            .iter()
            .zip(&exact)
            .map(|(&got, &e)| (got as f64 - e).abs() / e)
            .fold(0.0, f64::max);
        assert!(worst <= 3.2e-6, "off by {worst:e} relative");

        // Rows of every tail length: the shift, the sum, e^(max - max) = 1.
        for len in [1, 15, 16, 17, 33, 1001] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3)
                .collect();
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exact: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
            let mut z = row.clone();
            let (got_max, sum) = exp_row_bf16(&mut z, ExpShift::Max);
            assert_eq!(got_max, max);
            assert!(
                ((sum as f64) - exact).abs() <= 1e-5 * exact,
                "len {len}: {sum} vs {exact}"
            );
            let summed: f64 = z.iter().map(|&v| v as f64).sum();
            assert!(
                (summed - sum as f64).abs() <= 1e-5 * exact,
                "len {len}: the sum is of z"
            );
            assert_eq!(
                z.iter().filter(|&&v| v == 1.0).count(),
                row.iter().filter(|&&v| v == max).count()
            );
        }

        // A given shift and the bounded form: no maximum, positive
        // arguments up to 64 (the fused cross-entropy's bound) within the
        // same error, the same bits from both.
        let row: Vec<f32> = (0..=128_000).map(|i| -64.0 + i as f32 * 1e-3).collect();
        let mut z = row.clone();
        let (shift, sum) = exp_row_bf16(&mut z, ExpShift::Bounded);
        assert_eq!(shift, 0.0);
        let mut given = row.clone();
        assert_eq!(exp_row_bf16(&mut given, ExpShift::Given(0.0)), (shift, sum));
        assert!(
            z.iter()
                .zip(&given)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        let mut exact_sum = 0.0f64;
        for (&x, &got) in row.iter().zip(&z) {
            let e = (x as f64).exp();
            exact_sum += e;
            assert!((got as f64 - e).abs() <= 3.2e-6 * e, "e^{x}: {got} vs {e}");
        }
        assert!(((sum as f64) - exact_sum).abs() <= 1e-5 * exact_sum);

        // Flushes to 0, keeps NaN; a row of -inf gives zeros, not NaN.
        let mut z = vec![0.0, -87.4, -1000.0, f32::NEG_INFINITY, f32::NAN, -1.0];
        let (max, sum) = exp_row_bf16(&mut z, ExpShift::Max);
        assert_eq!((max, &z[..4]), (0.0, &[1.0, 0.0, 0.0, 0.0][..]));
        assert!(z[4].is_nan() && sum.is_nan());
        let mut z = vec![f32::NEG_INFINITY; 20];
        assert_eq!(
            exp_row_bf16(&mut z, ExpShift::Max),
            (f32::NEG_INFINITY, 0.0)
        );
        assert!(z.iter().all(|&v| v == 0.0));
        assert_eq!(
            exp_row_bf16(&mut [], ExpShift::Max),
            (f32::NEG_INFINITY, 0.0)
        );
    }
}
