//! Sinks: where finished rows go. The engine hands [`SinkBatch`]es to a
//! writer task over a channel; writers own all file I/O.
//!
//! - [`parquet`]: the lake (every table, partitioned, rolled, committed atomically).
//! - [`mqtt_publish`]: actions (and outcomes, bills) as JSON messages.

pub mod mqtt_publish;
pub mod parquet;

use crate::model::{ActionRow, BillRow, DeadLetter, Enriched, Gap, OutcomeRow};

/// Finished rows for one output table, with revisions where the table has them.
#[derive(Debug)]
pub enum SinkBatch {
    Aggregates(Vec<(Enriched, i64)>),
    Actions(Vec<(ActionRow, i64)>),
    Outcomes(Vec<(OutcomeRow, i64)>),
    Billing(Vec<(BillRow, i64)>),
    DeadLetters(Vec<DeadLetter>),
    Gaps(Vec<Gap>),
}
