//! # plantflow
//!
//! The value layer for industrial plant data: ingest tags, put them in
//! context (assets, tariffs, production runs, maintenance), turn findings
//! into owned, valued actions, and persist aggregates and actions to Parquet.
//!
//! ## Architecture tour
//! - [`config`]: TOML dataflow files → a validated [`config::Plan`]; every
//!   problem reported at once with file, line, column and key path.
//! - [`sources`]: replay of CSV/Parquet historian exports and context tables,
//!   running on tokio's blocking pool, never on a dataflow worker.
//! - [`engine`]: the only module that names timely and differential-dataflow:
//!   the bridge from sources, the window pre-aggregation operator, the
//!   incremental context joins, rules, and revisioned sinks.
//! - [`value`]: CEL expressions, derived metrics, rules → actions.
//! - [`sinks`]: the partitioned, atomic, rolling Parquet writer.
//! - [`gen`]: deterministic workload generator.
//! - [`sim`]: embedded MQTT broker (and later the simulated plant) for demo and tests.
//! - [`run`]: wiring, signals and the run summary.
//!
//! ## Time and corrections
//! Windows close when the watermark (max event time − allowed lateness)
//! passes their end. Later rows are not dropped: they produce a new revision
//! of the window and of every action it feeds. Context edits (in `--follow`
//! mode) retract and re-emit exactly the affected rows. In every table the
//! highest `revision` of a key is the truth.

pub mod bench;
pub mod config;
/// `plantflow demo`: the simulated plant end to end.
pub mod demo;
pub mod engine;
pub mod gen;
pub mod model;
/// Self-contained HTML report (KPIs, SVG charts, action list) built from a lake directory.
pub mod report;
pub mod run;
pub mod sim;
pub mod sinks;
pub mod sources;
pub mod stats;
pub mod value;

/// Exit code for configuration errors (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: i32 = 78;

/// The reference dataflow, embedded so `plantflow demo` works from any directory.
pub const WORKLOAD_V1_TOML: &str = include_str!("../dataflows/workload_v1.toml");
