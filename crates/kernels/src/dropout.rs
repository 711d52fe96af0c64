//! Counter-based dropout masks, and the random streams they come from.
//!
//! A mask bit is a pure function of `(seed, step, site, element index)`, so
//! the CPU and the GPU backends draw exactly the same masks and a backward
//! pass regenerates the forward mask instead of storing it. The hash uses
//! only 32-bit integer operations so that `shaders/dropout.wgsl` computes the
//! same bits. Other counter-based draws (a trainer's negative samples) use
//! the same streams ([`stream_key`], [`stream_bits`]) with sites of their own.

/// One round of the "lowbias32" integer hash (Chris Wellons' hash-prospector):
/// a bijection on `u32` with good avalanche.
#[inline]
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The key of the random stream of `site` at optimiser step `step` of a run
/// seeded with `seed`. Dropout layers and other users of counter-based
/// randomness take distinct sites, so their draws do not correlate.
pub fn stream_key(seed: u64, step: u64, site: u32) -> u32 {
    mix32(
        (seed as u32)
            ^ mix32(
                ((seed >> 32) as u32)
                    ^ mix32((step as u32) ^ mix32(((step >> 32) as u32) ^ mix32(site))),
            ),
    )
}

/// 32 random bits for element `index` of the stream `key`.
#[inline]
pub fn stream_bits(key: u32, index: u32) -> u32 {
    mix32(key ^ mix32(index))
}

/// A dropout mask: which elements of one tensor are kept, and the scale
/// `1 / (1 - p)` applied to them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Drop probability in `[0, 1)`.
    pub p: f32,
    /// Per-(seed, step, site) key mixed into every element's hash.
    pub key: u32,
    /// An element is kept when `hash >> 8 >= threshold` (`p * 2^24`, rounded).
    pub threshold: u32,
    /// `1 / (1 - p)`.
    pub scale: f32,
}

impl Dropout {
    /// The mask of dropout site `site` (a fixed number per dropout layer) at
    /// optimiser step `step` of a run seeded with `seed`.
    ///
    /// # Panics
    /// If `p` is not in `[0, 1)`.
    pub fn new(p: f32, seed: u64, step: u64, site: u32) -> Self {
        assert!(
            (0.0..1.0).contains(&p),
            "dropout probability {p} is not in [0, 1)"
        );
        Dropout {
            p,
            key: stream_key(seed, step, site),
            threshold: (p as f64 * 16_777_216.0).round() as u32,
            scale: (1.0 / (1.0 - p as f64)) as f32,
        }
    }

    /// Whether element `index` is kept.
    #[inline]
    pub fn keep(&self, index: u32) -> bool {
        (stream_bits(self.key, index) >> 8) >= self.threshold
    }

    /// The factor element `index` is multiplied by: `scale` or 0.
    #[inline]
    pub fn factor(&self, index: u32) -> f32 {
        if self.keep(index) { self.scale } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_rate_matches_probability() {
        for &p in &[0.0f32, 0.1, 0.5, 0.9] {
            let d = Dropout::new(p, 42, 7, 3);
            let n = 200_000u32;
            let kept = (0..n).filter(|&i| d.keep(i)).count() as f64 / n as f64;
            assert!(
                (kept - (1.0 - p as f64)).abs() < 0.005,
                "p={p}: kept {kept}"
            );
        }
    }

    #[test]
    fn masks_differ_across_seed_step_and_site() {
        let base = Dropout::new(0.5, 1, 1, 1);
        for other in [
            Dropout::new(0.5, 2, 1, 1),
            Dropout::new(0.5, 1, 2, 1),
            Dropout::new(0.5, 1, 1, 2),
            Dropout::new(0.5, 1 << 32, 1, 1),
        ] {
            let same = (0..10_000u32)
                .filter(|&i| base.keep(i) == other.keep(i))
                .count();
            assert!(
                (4_500..5_500).contains(&same),
                "masks too correlated: {same}"
            );
        }
    }

    #[test]
    fn zero_probability_keeps_everything_unscaled() {
        let d = Dropout::new(0.0, 9, 9, 9);
        assert!((0..10_000u32).all(|i| d.factor(i) == 1.0));
    }
}
