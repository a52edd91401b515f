//! What the engine and the sources hand to the sinks: finished rows of one
//! output table at a time.

use crate::model::{ActionRow, ActionTotals, BillRow, DeadLetter, Enriched, Gap, OutcomeRow};

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
