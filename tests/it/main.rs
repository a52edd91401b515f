//! plantflow's integration tests in one binary (one link of Arrow, timely
//! and async-opcua instead of one per file), one module per capability:
//!
//! - [`integration`]: replay end to end against the DuckDB oracle, workers,
//!   late rows and context edits as corrections, dead letters, config
//!   errors verbatim, the CLI's exit codes, rolling and committing files.
//! - [`value`]: the value vectors: billing, tariffs, actions and their
//!   lifecycle, the rule library, routing, M&V verification.
//! - [`mqtt`]: the MQTT source and sink against the embedded broker.
//! - [`opcua`]: the OPC UA source against the project's OPC UA server.
//! - [`demo`]: the demo end to end.
//! - [`reliability`]: fail loud, never hang, stay bounded: values that
//!   cannot run fail `validate`, failing components end the run with one
//!   line, every mutation of the reference dataflow is rejected or runs.
//! - [`durable`]: a replay killed at any point resumes to the lake of an
//!   uninterrupted run; commits are whole across tables; a lake belongs to
//!   one dataflow and one node.
//! - [`operator`]: the operator surface (`[http]`): health, readiness and
//!   metrics of a running node, read as a scraper would; the actions API.
//! - [`tags`]: the tag-quality view and table.
//! - [`jsonl`]: the JSON-lines sink against the lake it writes beside.
//! - [`import`]: historian exports (wide, long, `;`, decimal commas, local
//!   times) through `[sources.format]` and `import inspect`, against the oracle.
//! - [`backtest`]: `plantflow backtest` against a run's lake and the lake's evidence.
//! - [`webhook`]: the webhook sink's config errors (delivery: `tests/interop`).
//! - [`modbus`]: the Modbus source's config errors (polling: `tests/interop`).
//! - [`schema`]: the JSON Schema of dataflow files, against an independent validator.
//! - [`house`]: the code's layout stays one-way and readable.
//!
//! The suites against independent peers (Mosquitto, Python asyncua and a
//! Sparkplug node) are in `tests/interop/`, behind the `interop` feature.

#[path = "../common/mod.rs"]
mod common;

mod backtest;
mod bacnet;
mod cluster;
mod demo;
mod durable;
mod house;
mod import;
mod integration;
mod jsonl;
mod modbus;
mod mqtt;
mod opcua;
mod operator;
mod reliability;
mod schema;
mod tags;
mod value;
mod webhook;
