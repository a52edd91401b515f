//! Sinks: where finished rows go. The engine hands [`SinkBatch`]es to a
//! writer task over a channel; writers own all file I/O.
//!
//! - [`parquet`]: the lake (every table, partitioned, rolled, committed atomically).
//! - [`mqtt_publish`]: actions (and outcomes, bills) as JSON messages.
//! - [`tally`]: the run summary's bounded view of actions.

pub mod mqtt_publish;
pub mod parquet;
pub mod tally;

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
