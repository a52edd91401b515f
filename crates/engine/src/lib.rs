//! plantflow's engine (floor 5, see `docs/ARCHITECTURE.md`): the only crate
//! that names timely and differential-dataflow.

use plantflow_core::{config, ingest, model, stats};
use plantflow_value::value;

pub mod engine;
