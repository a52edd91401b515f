//! Sinks: where finished rows go. The engine hands [`SinkBatch`]es to a
//! writer task over a channel; writers own all file I/O.
//!
//! - [`parquet`]: the lake (every table, partitioned, rolled, committed atomically).
//! - [`tally`]: the run summary's bounded view of actions.

pub mod jsonl;
pub mod parquet;
pub mod tally;
pub mod webhook;
