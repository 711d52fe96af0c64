//! Rotary position embedding (RoFormer, Su et al. 2021) of attention's
//! queries and keys: the table of angles both backends read.
//!
//! Within each head, column `i < head_dim / 2` pairs with column
//! `i + head_dim / 2` (the "rotate half" layout of GPT-NeoX and LLaMA), and
//! the pair of the query or key at position `p` is turned by the angle
//! `p * theta_i`, `theta_i = base^(-2 i / head_dim)`:
//!
//! ```text
//! y_i        = x_i cos(p theta_i) - x_{i+h} sin(p theta_i)
//! y_{i+h}    = x_i sin(p theta_i) + x_{i+h} cos(p theta_i)
//! ```
//!
//! so that `q_p . k_s` depends on the positions only through `p - s`.
//! Attention can then look a given number of steps back whatever the
//! absolute positions are. The backward turns the gradient by the opposite
//! angles (a rotation's transpose is its inverse), and the values pass
//! through unchanged.
//!
//! The cosines and sines are computed once on the host, in `f64` and rounded
//! once, and uploaded as a table: GPU `sin`/`cos` are not accurate for
//! angles of hundreds of radians (`p` up to `max_len - 1`), and one table
//! makes both backends turn by the same numbers.

/// RoFormer's base of the angles.
pub const ROTARY_BASE: f64 = 10_000.0;

/// The table of [`crate::Backend::rotary`], `[len, head_dim]` row-major:
/// row `p` holds `cos(p theta_i)` for `i` in `0..head_dim / 2`, then
/// `sin(p theta_i)` for the same `i`, with `theta_i = ROTARY_BASE^(-2 i /
/// head_dim)`.
///
/// # Panics
/// If `head_dim` is odd (the columns would not pair).
pub fn rotary_table(len: usize, head_dim: usize) -> Vec<f32> {
    assert!(
        head_dim.is_multiple_of(2),
        "rotary: head_dim must be even to pair columns, got {head_dim}"
    );
    let half = head_dim / 2;
    let mut table = Vec::with_capacity(len * head_dim);
    for p in 0..len {
        let angles: Vec<f64> = (0..half)
            .map(|i| p as f64 * ROTARY_BASE.powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        table.extend(angles.iter().map(|a| a.cos() as f32));
        table.extend(angles.iter().map(|a| a.sin() as f32));
    }
    table
}

/// Which way the rotary kernels turn the pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// By the position's angle.
    Forward,
    /// By the opposite angle: the forward's transpose, for the gradient.
    Backward,
}

impl Turn {
    /// The factor of the sines.
    pub(crate) fn sin_sign(self) -> f32 {
        match self {
            Turn::Forward => 1.0,
            Turn::Backward => -1.0,
        }
    }
}
