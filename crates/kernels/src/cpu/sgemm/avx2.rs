//! The AVX2 + FMA microkernel: 6 x 16 tiles of `c` in 12 registers.

use std::arch::x86_64::*;
use std::ops::Range;

use super::operands::Job;
use super::x86::{Simd, task};

struct Avx2;

impl Avx2 {
    /// All-ones in the first `n` lanes.
    #[inline(always)]
    unsafe fn mask(n: usize) -> __m256i {
        unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(n as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }
}

impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> __m256 {
        unsafe { _mm256_maskload_ps(p, Self::mask(n)) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, v: __m256, n: usize) {
        unsafe { _mm256_maskstore_ps(p, Self::mask(n), v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
}

/// # Safety
/// The CPU must support AVX2 and FMA; see `Job::run`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn run(job: &Job<'_>, rows: Range<usize>, cols: Range<usize>, ks: Range<usize>) {
    unsafe { task::<Avx2, 6, 2>(job, rows, cols, ks) }
}
