//! plantflow's lowest floors (see `docs/ARCHITECTURE.md`): the shared
//! vocabulary ([`model`]), CEL expressions ([`expr`]), run counters
//! ([`stats`]), the config loader and core plan ([`config`]) and the
//! sources' port ([`ingest`]). Every other crate of the workspace builds on
//! this one; it names no source, sink or engine.

pub mod config;
pub mod expr;
pub mod ingest;
pub mod model;
pub mod stats;
