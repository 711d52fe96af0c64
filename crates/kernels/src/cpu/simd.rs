//! Runtime dispatch of hot loops to AVX2 and AVX-512 builds.
//!
//! The crate is compiled for baseline x86-64 (SSE2, four f32 lanes, no
//! 32-bit integer multiply). The loops below run 1.5x (softmax) to 5x
//! (dropout's integer hash) faster when compiled for AVX2, and the softmax
//! another 1.3x for AVX-512, so on CPUs that have them they run such a build
//! of the very same code. Rust never fuses `a * b + c` into an FMA on its
//! own, so every build does the same operations in the same order and gives
//! the same bits; a loop whose body is generic over `FMA` (the softmax's
//! `exp`) is given fused multiply-adds in the AVX2 + FMA and AVX-512 builds,
//! which then give the same bits as each other, and differ from the
//! baseline build in the last bits (like the matrix products of `sgemm/`).

use std::cell::Cell;
use std::sync::OnceLock;

/// The instruction sets a dispatched loop may be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// The crate's own target (SSE2 on x86-64).
    Baseline,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512F (with AVX2 and FMA).
    Avx512,
}

thread_local! {
    /// Tests lower this to run the other builds on one machine.
    static CAP: Cell<Level> = const { Cell::new(Level::Avx512) };
}

/// The best build this CPU runs (capped on this thread by [`with_level`]).
pub(crate) fn level() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    let detected = *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Level::Avx512;
                }
                return Level::Avx2;
            }
        }
        Level::Baseline
    });
    detected.min(CAP.with(Cell::get))
}

/// Runs `f` with dispatched loops on this thread limited to `cap`.
#[cfg(test)]
pub(crate) fn with_level<T>(cap: Level, f: impl FnOnce() -> T) -> T {
    let old = CAP.with(|c| c.replace(cap));
    let out = f();
    CAP.with(|c| c.set(old));
    out
}

/// Defines `fn $name(args) -> ret` that calls the `#[inline(always)]`
/// function `$body` with the same arguments, inlined into an AVX-512 or an
/// AVX2 + FMA function when the CPU supports it (see [`level`]), else as
/// compiled by default. Written `$body::<FMA>(args)`, it calls
/// `$body::<true>` in those two builds and `$body::<false>` in the default
/// one, for bodies that fuse multiply-adds where FMA is an instruction
/// (elsewhere `mul_add` is a slow software call).
macro_rules! simd_dispatch {
    ($(#[$attr:meta])* $vis:vis fn $name:ident = $body:ident::<FMA>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $crate::cpu::simd::simd_dispatch!(@fn [$(#[$attr])*] $vis $name ($($arg: $ty),*) ($($ret)?) $body::<true>, $body::<false>);
    };
    ($(#[$attr:meta])* $vis:vis fn $name:ident = $body:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $crate::cpu::simd::simd_dispatch!(@fn [$(#[$attr])*] $vis $name ($($arg: $ty),*) ($($ret)?) $body, $body);
    };
    (@fn [$(#[$attr:meta])*] $vis:vis $name:ident ($($arg:ident: $ty:ty),*) ($($ret:ty)?) $fused:expr, $plain:expr) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            match $crate::cpu::simd::level() {
                $crate::cpu::simd::Level::Avx512 => {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                        $fused($($arg),*)
                    }
                    // SAFETY: the CPU supports AVX-512F and FMA, checked by `level`.
                    return unsafe { avx512($($arg),*) };
                }
                $crate::cpu::simd::Level::Avx2 => {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                        $fused($($arg),*)
                    }
                    // SAFETY: the CPU supports AVX2 and FMA, checked by `level`.
                    return unsafe { avx2($($arg),*) };
                }
                $crate::cpu::simd::Level::Baseline => {}
            }
            $plain($($arg),*)
        }
    };
}

pub(crate) use simd_dispatch;
