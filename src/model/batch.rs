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
