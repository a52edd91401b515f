//! The memory governor: the node's degraded mode. Every 250 ms it reads the
//! memory the process's allocations hold; above `[memory] max` it holds
//! every source's intake (MQTT stops acknowledging, so the broker keeps
//! the messages; replay stops reading), hands freed memory back to the
//! system, and says so once; below 90 % of the limit it lets the sources go
//! on. Input alone does not shrink the engine's state (windows close as
//! input advances time), so a node still above its limit after
//! `[memory] grace` of holding ends the run with an error naming the key,
//! rather than wait forever or be killed by the system; a durable node
//! goes on from its checkpoint and input log at the next start.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::MemoryPlan;
use crate::ingest::bridge::Ingest;
use crate::stats::{heap_in_use as in_use, Stats};

/// Returns freed memory to the system (glibc keeps it otherwise).
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the governor does after a reading.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Nothing changes.
    Stay,
    /// Above the limit: hold the sources.
    Hold,
    /// Back under 90 % of the limit after holding this long: release them.
    Release(Duration),
    /// Held this long and still above the limit: end the run.
    Fail(Duration),
}

/// The governor's state between readings.
#[derive(Debug)]
pub struct Governor {
    max: u64,
    grace: Duration,
    held_since: Option<Instant>,
}

impl Governor {
    pub fn new(max: u64, grace: Duration) -> Governor {
        Governor {
            max,
            grace,
            held_since: None,
        }
    }

    /// Takes a reading of `used` bytes at `now`.
    pub fn step(&mut self, used: u64, now: Instant) -> Step {
        match self.held_since {
            None if used > self.max => {
                self.held_since = Some(now);
                Step::Hold
            }
            None => Step::Stay,
            Some(since) if used < self.max / 10 * 9 => {
                self.held_since = None;
                Step::Release(now - since)
            }
            Some(since) if used > self.max && now - since >= self.grace => Step::Fail(now - since),
            Some(_) => Step::Stay,
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// Runs the governor until `stop`; an error ends the run.
pub fn govern(
    plan: &MemoryPlan,
    ingest: &Ingest,
    stats: &Arc<Stats>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let Some(max) = plan.max_bytes else {
        return Ok(());
    };
    let mut g = Governor::new(max, Duration::from_millis(plan.grace_ms));
    while !stop.load(Relaxed) {
        let Some(used) = in_use() else { return Ok(()) };
        stats.memory_peak.fetch_max(used, Relaxed);
        match g.step(used, Instant::now()) {
            Step::Stay => {}
            Step::Hold => {
                ingest.hold(true);
                trim();
                stats.event("memory: input held (above the memory limit)", 1);
                tracing::warn!(
                    "memory: {} in use, above the limit of {} ({}): input held until it is under 90 %",
                    mib(used),
                    mib(max),
                    plan.from
                );
            }
            Step::Release(d) => {
                ingest.hold(false);
                tracing::warn!(
                    "memory: {} in use, under 90 % of {}: input taken again after {:.1?}",
                    mib(used),
                    mib(max),
                    d
                );
            }
            Step::Fail(d) => {
                ingest.hold(false);
                return Err(format!(
                    "{} in use, above the limit of {} ({}) after holding input for {:.0?} (`memory.grace`): the state itself is this large; raise `memory.max`, shorten `window.retention` or set `window.spill_after`",
                    mib(used),
                    mib(max),
                    plan.from,
                    d
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MIB: u64 = 1 << 20;

    #[test]
    fn holds_above_the_limit_releases_under_ninety_percent_and_fails_after_grace() {
        let t = Instant::now();
        let mut g = Governor::new(100 * MIB, 10 * S);
        assert_eq!(g.step(100 * MIB, t), Step::Stay, "at the limit");
        assert_eq!(g.step(101 * MIB, t), Step::Hold);
        assert_eq!(
            g.step(95 * MIB, t + S),
            Step::Stay,
            "between 90 % and the limit: still held"
        );
        assert_eq!(g.step(120 * MIB, t + 5 * S), Step::Stay);
        assert_eq!(g.step(89 * MIB, t + 6 * S), Step::Release(6 * S));
        assert_eq!(
            g.step(95 * MIB, t + 7 * S),
            Step::Stay,
            "released: 95 % is fine"
        );
        assert_eq!(g.step(101 * MIB, t + 8 * S), Step::Hold);
        assert_eq!(
            g.step(99 * MIB, t + 12 * S),
            Step::Stay,
            "under the limit: no failure"
        );
        assert_eq!(g.step(101 * MIB, t + 17 * S), Step::Stay, "9 s held");
        assert_eq!(g.step(101 * MIB, t + 18 * S), Step::Fail(10 * S));
    }

    #[test]
    fn the_heap_in_use_follows_allocations() {
        let before = in_use().unwrap();
        let v = vec![1u8; 64 << 20];
        let during = in_use().unwrap();
        assert!(during >= before + (60 << 20), "{before} → {during}");
        drop(v);
        let after = in_use().unwrap();
        assert!(after < during - (60 << 20), "{during} → {after}");
    }
}
