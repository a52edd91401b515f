//! plantflow's value layer (floor 3, see `docs/ARCHITECTURE.md`): rules,
//! actions and their lifecycle, M&V verification and billing, as plain
//! functions the engine calls. The module keeps its name, so paths read
//! `crate::value::…` here as in every crate above.

use plantflow_core::{config, expr, model, stats};

pub mod value;
