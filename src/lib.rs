//! # plantflow
//!
//! The value layer for industrial plant data: ingest tags, put them in
//! context (assets, tariffs, production runs, maintenance), turn findings
//! into owned, valued actions, and persist aggregates and actions to Parquet.
//!
//! ## Architecture tour
//! Folders are floors: data flows up through them, imports point only down
//! (`tests/it/house.rs` checks it; `docs/ARCHITECTURE.md` draws it).
//! - [`model`]: the shared vocabulary (samples, windows, rows, intervals,
//!   batches for the sinks, the tariff calendar); imports nothing.
//! - [`expr`]: CEL expressions, type-checked against the columns in scope.
//! - [`stats`]: run counters. [`gen`]: the deterministic workload generator.
//! - [`config`]: the loader (every problem at once, with file, line, column
//!   and key path) and the core [`config::Plan`] with its sections.
//! - [`value`]: the pure domain: derived metrics, rules, actions and their
//!   lifecycle, M&V verification, billing.
//! - [`ingest`]: the sources' port: tag registry, window geometry, the
//!   normaliser and the bridge onto the workers' bounded channels.
//! - [`sources`]: historian replay, context tables, action status updates.
//! - [`mqtt`]: the MQTT source and the `mqtt_publish` sink, one protocol in
//!   one folder. [`opcua`]: the OPC UA source. [`modbus`]: the Modbus TCP
//!   source. [`bacnet`]: the BACnet/IP source.
//! - [`sinks`]: the partitioned, atomic, rolling Parquet lake.
//! - [`http`]: the operator surface (`[http]`): health, readiness, metrics.
//! - [`engine`]: the only module that names timely and differential-dataflow:
//!   the window pre-aggregation operator, the incremental context joins,
//!   rules, the value layer's operator and revisioned outputs.
//! - [`dataflow`]: the registry of component kinds; a dataflow file → a
//!   [`dataflow::Dataflow`].
//! - [`run`]: wiring, the supervisor (a failing component ends the run with
//!   one line; a watchdog bounds shutdown), signals and the run summary.
//! - [`report`], [`sim`], [`bench`], [`demo`]: the HTML report, the simulated
//!   plant, benchmark stages and the demo.
//!
//! ## Time and corrections
//! Windows close when the watermark (max event time − allowed lateness)
//! passes their end. Later rows are not dropped: they produce a new revision
//! of the window and of every action it feeds. Context edits (in `--follow`
//! mode) retract and re-emit exactly the affected rows. In every table the
//! highest `revision` of a key is the truth.

pub mod bacnet;
pub mod bench;
pub mod config;
pub mod dataflow;
/// `plantflow demo`: the simulated plant end to end.
pub mod demo;
pub mod engine;
pub mod expr;
pub mod gen;
pub mod http;
pub mod ingest;
pub mod modbus;
pub mod model;
pub mod mqtt;
pub mod opcua;
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
