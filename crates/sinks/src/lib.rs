//! plantflow's Parquet lake (floor 4, see `docs/ARCHITECTURE.md`).

use plantflow_core::{config, expr, model, stats};
// The tallies' tests build rows with the value layer.
#[cfg(test)]
use plantflow_value::value;

pub mod sinks;
