//! What the bridge of a durable node keeps of its input (where each source
//! is, the context the engine has, totals), and the time of the last
//! checkpoint written: the parts of a checkpoint the bridge owns.

use std::sync::{Condvar, Mutex};

use super::bridge::{Resumed, REDELIVERABLE};
use super::InitialContext;
use crate::model::Sample;

/// What the bridge of a durable node keeps of its input, for a restart:
/// where each source is, and the context the engine has.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Tracked {
    pub sources: Vec<SourceTrack>,
    /// The context files as the log began (a restart compares them).
    pub began: InitialContext,
    /// That context with every logged change applied.
    pub held: InitialContext,
    /// What the log has held since it began, checkpoints included.
    pub counts: LogCounts,
}

/// Totals of what a log has held since it began.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct LogCounts {
    pub samples: u64,
    pub messages: u64,
    pub context: u64,
    /// Runs that appended to it (the first, then one per restart).
    pub runs: u64,
}

/// One source's place in the input (see [`Resumed`]).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct SourceTrack {
    epoch: u64,
    max_ts: Option<i64>,
    position: Option<u64>,
    /// Hashes of its latest messages, oldest first.
    messages: std::collections::VecDeque<u64>,
    /// Its last sample per tag, by tag id.
    last: Vec<Option<Sample>>,
}

impl SourceTrack {
    pub(super) fn take(
        &mut self,
        epoch: u64,
        rows: &[Sample],
        messages: &[u64],
        position: Option<u64>,
    ) {
        self.epoch = self.epoch.max(epoch);
        self.position = position.or(self.position);
        for s in rows {
            self.max_ts = Some(self.max_ts.map_or(s.ts, |m| m.max(s.ts)));
            let i = s.tag as usize;
            if i >= self.last.len() {
                self.last.resize(i + 1, None);
            }
            self.last[i] = Some(*s);
        }
        self.messages.extend(messages);
        while self.messages.len() > REDELIVERABLE {
            self.messages.pop_front();
        }
    }

    pub(super) fn resumed(&self) -> Resumed {
        Resumed {
            epoch: self.epoch,
            max_ts: self.max_ts,
            messages: self.messages.iter().copied().collect(),
            last: self.last.iter().flatten().map(|s| (s.tag, *s)).collect(),
            position: self.position,
        }
    }
}

/// The bridge's part of a checkpoint at `at`: the log goes on in segment
/// `segment` from there.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BridgePart {
    pub at: u64,
    pub segment: u64,
    pub source_epochs: Vec<Option<u64>>,
    pub track: Tracked,
}

/// The time of the last checkpoint written, to wait for one.
#[derive(Default)]
pub struct Written {
    at: Mutex<u64>,
    cv: Condvar,
}

impl Written {
    /// A checkpoint at `at` is written.
    pub fn set(&self, at: u64) {
        if let Ok(mut a) = self.at.lock() {
            *a = (*a).max(at);
        }
        self.cv.notify_all();
    }

    /// Waits until a checkpoint at `at` or later is written, at most `limit`.
    pub(super) fn wait(&self, at: u64, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut a = self.at.lock().unwrap_or_else(|p| p.into_inner());
        while *a < at {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            a = self
                .cv
                .wait_timeout(a, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}
