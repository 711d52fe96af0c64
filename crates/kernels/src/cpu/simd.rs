//! Runtime dispatch of hot loops to an AVX2 build.
//!
//! The crate is compiled for baseline x86-64 (SSE2, four f32 lanes, no
//! 32-bit integer multiply). The loops below run 1.5x (softmax) to 5x
//! (dropout's integer hash) faster when compiled for AVX2, so on CPUs that
//! have it they run an AVX2 build of the very same code. Rust never fuses
//! `a * b + c` into an FMA on its own, so both builds do the same
//! operations in the same order and give the same bits.

/// Defines `fn $name(args) -> ret` that calls the `#[inline(always)]`
/// function `$body` with the same arguments, inlined into an AVX2-enabled
/// function when the CPU supports AVX2, else as compiled by default.
macro_rules! avx2_dispatch {
    ($(#[$attr:meta])* $vis:vis fn $name:ident = $body:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { avx2($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use avx2_dispatch;
