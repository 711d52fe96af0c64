//! Wall time per op of the CPU backend, for `--profile-ops`.
//!
//! Off unless enabled; then every op call reads the clock twice and adds
//! the difference to its name's total under a mutex (an op takes at least
//! microseconds, the bookkeeping tens of nanoseconds). Ops that run
//! several phases (the fused cross-entropy) time each phase under its own
//! name with [`Laps`], so that the names partition the time and can be
//! summed. `CpuBackend` holds no state, so the profile is the process's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// `(name, total, calls)` in order of first use.
static TIMES: Mutex<Vec<(&'static str, Duration, u64)>> = Mutex::new(Vec::new());

/// Total wall time of one op (or phase) since profiling started.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    /// `family.op`, e.g. `matmul.linear` or `cross_entropy.softmax`.
    pub op: &'static str,
    /// Total milliseconds over all its calls.
    pub total_ms: f64,
    /// Number of calls.
    pub calls: u64,
}

/// Starts or stops timing.
pub(super) fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Every op's total so far, slowest first.
pub(super) fn report() -> Vec<OpTime> {
    let mut out: Vec<OpTime> = times()
        .iter()
        .map(|&(op, total, calls)| OpTime {
            op,
            total_ms: total.as_secs_f64() * 1e3,
            calls,
        })
        .collect();
    out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    out
}

/// Forgets every total.
pub(super) fn reset() {
    times().clear();
}

fn times() -> std::sync::MutexGuard<'static, Vec<(&'static str, Duration, u64)>> {
    // A panic while holding the lock leaves the totals valid.
    TIMES.lock().unwrap_or_else(|e| e.into_inner())
}

fn record(name: &'static str, elapsed: Duration) {
    let mut times = times();
    match times.iter_mut().find(|(n, _, _)| *n == name) {
        Some((_, total, calls)) => {
            *total += elapsed;
            *calls += 1;
        }
        None => times.push((name, elapsed, 1)),
    }
}

/// Times the rest of the scope under `name` (when profiling is on).
#[must_use = "the time is recorded when the timer is dropped"]
pub(super) struct OpTimer {
    name: &'static str,
    start: Option<Instant>,
}

/// A timer for the op `name`; records when dropped.
pub(super) fn time(name: &'static str) -> OpTimer {
    OpTimer {
        name,
        start: ENABLED.load(Ordering::Relaxed).then(Instant::now),
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            record(self.name, start.elapsed());
        }
    }
}

/// Consecutive phases of one op: `lap(name)` records the time since the
/// previous lap (or the start) under `name`.
pub(super) struct Laps {
    last: Option<Instant>,
}

impl Laps {
    /// Starts the first phase now.
    pub(super) fn start() -> Laps {
        Laps {
            last: ENABLED.load(Ordering::Relaxed).then(Instant::now),
        }
    }

    /// Ends the current phase, naming it.
    pub(super) fn lap(&mut self, name: &'static str) {
        if let Some(last) = self.last {
            let now = Instant::now();
            record(name, now - last);
            self.last = Some(now);
        }
    }
}
