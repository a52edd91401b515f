//! plantflow's OPC UA source (floor 4, see `docs/ARCHITECTURE.md`).

use plantflow_core::{config, ingest, model, stats};

pub mod opcua;
