//! What the engine and the sources hand to the sinks: finished rows of one
//! output table at a time.

use crate::model::{
    ActionRow, ActionTotals, BillRow, DeadLetter, Enriched, Gap, OutcomeRow, TagQualityRow,
};

/// Finished rows for one output table, with revisions where the table has them.
#[derive(Debug)]
pub enum SinkBatch {
    Aggregates(Vec<(Enriched, i64)>),
    Actions(Vec<(ActionRow, i64)>),
    /// What new action versions changed in the run's totals.
    ActionTotals(Vec<ActionTotals>),
    Outcomes(Vec<(OutcomeRow, i64)>),
    Billing(Vec<(BillRow, i64)>),
    DeadLetters(Vec<DeadLetter>),
    Gaps(Vec<Gap>),
    /// A snapshot of every tag's data quality.
    TagQuality(Vec<TagQualityRow>),
    /// Output progress: everything `source` (one of `of` engine outputs:
    /// a sink operator on one worker) will send before timely time `time` has
    /// been sent. `time` is `u64::MAX` once the source has ended. An
    /// event-time roll commits when every source has passed its boundary.
    Progress {
        source: usize,
        of: usize,
        time: u64,
    },
}

impl SinkBatch {
    /// Roughly how much memory the batch holds, for the bound on the
    /// engine's output waiting for the writer: only the engine's tables
    /// (sources bound their dead letters themselves).
    pub fn engine_bytes(&self) -> u64 {
        use std::mem::size_of;
        let n = |len: usize, each: usize| (len * each) as u64;
        match self {
            SinkBatch::Aggregates(r) => n(r.len(), size_of::<(Enriched, i64)>() + 96),
            SinkBatch::Actions(r) => n(r.len(), size_of::<(ActionRow, i64)>() + 512),
            SinkBatch::ActionTotals(r) => n(r.len(), size_of::<ActionTotals>() + 64),
            SinkBatch::Outcomes(r) => r
                .iter()
                .map(|o| n(1, size_of::<(OutcomeRow, i64)>() + 256) + n(o.0.buckets.len(), 96))
                .sum(),
            SinkBatch::Billing(r) => n(r.len(), size_of::<(BillRow, i64)>() + 64),
            SinkBatch::DeadLetters(_)
            | SinkBatch::Gaps(_)
            | SinkBatch::TagQuality(_)
            | SinkBatch::Progress { .. } => 0,
        }
    }
}

/// A batch with the timely time its rows belong to, when they have one.
///
/// The lake commits whole times: a row stamped `t` goes into the commit
/// that covers every time before some `T > t`. Rows the engine emits for a
/// time are stamped with it; so are the dead letters of a source that is
/// read again from its start on a resume (a replay). Rows with no stamp
/// (a live source's dead letters and gaps, progress markers) are written
/// as they come.
#[derive(Debug)]
pub struct Stamped {
    pub time: Option<u64>,
    pub batch: SinkBatch,
}

impl Stamped {
    /// Rows of timely time `time`.
    pub fn at(time: u64, batch: SinkBatch) -> Stamped {
        Stamped {
            time: Some(time),
            batch,
        }
    }

    /// Rows of no particular time.
    pub fn now(batch: SinkBatch) -> Stamped {
        Stamped { time: None, batch }
    }
}

/// Rows for the lake from a cluster's process other than the writer's: its
/// sources' dead letters and gaps, carried by the engine to worker 0 with
/// their stamp.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum SideRows {
    DeadLetters(Vec<DeadLetter>),
    Gaps(Vec<Gap>),
}

impl SideRows {
    /// The rows of `s` that travel to the writer's process (`None` for
    /// the others: progress markers and tag snapshots stay where they are).
    pub fn of(s: Stamped) -> Option<(Option<u64>, SideRows)> {
        match s.batch {
            SinkBatch::DeadLetters(r) => Some((s.time, SideRows::DeadLetters(r))),
            SinkBatch::Gaps(r) => Some((s.time, SideRows::Gaps(r))),
            _ => None,
        }
    }

    pub fn stamped(time: Option<u64>, rows: SideRows) -> Stamped {
        let batch = match rows {
            SideRows::DeadLetters(r) => SinkBatch::DeadLetters(r),
            SideRows::Gaps(r) => SinkBatch::Gaps(r),
        };
        Stamped { time, batch }
    }
}
