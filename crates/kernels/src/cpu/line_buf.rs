//! Buffers that start on a cache line.
//!
//! glibc's `malloc` (and so a `Vec`'s allocation) starts a block only 16
//! bytes aligned, so a 64-byte row of a matrix straddles two cache lines
//! three times in four. Loads that straddle two lines cost more, and AMX
//! tile loads much more (measured: a 1 KiB tile from L1 in 19 ns against
//! 4.2 aligned, on the Xeon of docs/benchmarks.md).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;

/// 64 bytes on a 64-byte line.
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([u32; 16]);

/// `len` values of `T` from the start of a 64-byte line; otherwise like a
/// `Vec<T>` of plain values whose size divides 64 (`u16`, `u32`, `f32`).
pub(crate) struct LineBuf<T> {
    lines: Vec<Line>,
    len: usize,
    value: PhantomData<T>,
}

impl<T> Default for LineBuf<T> {
    fn default() -> Self {
        LineBuf {
            lines: Vec::new(),
            len: 0,
            value: PhantomData,
        }
    }
}

impl<T: Pod> LineBuf<T> {
    const PER_LINE: usize = {
        assert!(size_of::<Line>().is_multiple_of(size_of::<T>()));
        size_of::<Line>() / size_of::<T>()
    };

    /// `len` zeros.
    pub(crate) fn zeroed(len: usize) -> Self {
        let mut buf = LineBuf::default();
        buf.resize(len);
        buf
    }

    /// As `Vec::resize` with zeros: the first `len` values kept, new ones 0.
    pub(crate) fn resize(&mut self, len: usize) {
        let (old_len, old_lines) = (self.len, self.lines.len());
        self.lines
            .resize(len.div_ceil(Self::PER_LINE), Line::default());
        self.len = len;
        // New lines came zeroed; kept lines may hold values past the old
        // length (left by a shrink).
        let stale_end = len.min(old_lines * Self::PER_LINE);
        if old_len < stale_end {
            self[old_len..stale_end].fill(T::zeroed());
        }
    }
}

impl<T: Pod> Deref for LineBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl<T: Pod> DerefMut for LineBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts_on_a_line<T>(buf: &LineBuf<T>) -> bool
    where
        T: Pod,
    {
        (buf.as_ptr() as usize).is_multiple_of(64)
    }

    #[test]
    fn every_size_starts_on_a_line() {
        for len in [1, 7, 16, 33, 1000, 4099] {
            assert!(
                starts_on_a_line(&LineBuf::<u16>::zeroed(len)),
                "u16 x {len}"
            );
            assert!(
                starts_on_a_line(&LineBuf::<u32>::zeroed(len)),
                "u32 x {len}"
            );
            assert!(
                starts_on_a_line(&LineBuf::<f32>::zeroed(len)),
                "f32 x {len}"
            );
        }
    }

    /// Resizes and writes behave as on a `Vec`: values kept, new ones zero,
    /// also where a shrink left values in the last line.
    #[test]
    fn resizes_as_a_vec_does() {
        let mut buf = LineBuf::<u16>::default();
        let mut model: Vec<u16> = Vec::new();
        for (step, len) in [40, 3, 70, 31, 0, 50, 50, 129, 64].into_iter().enumerate() {
            buf.resize(len);
            model.resize(len, 0);
            assert_eq!(&buf[..], &model[..], "after resize {step} to {len}");
            assert!(starts_on_a_line(&buf));
            for (i, (b, m)) in buf.iter_mut().zip(&mut model).enumerate() {
                *b = (step * 1000 + i) as u16 + 1;
                *m = *b;
            }
        }
    }
}
