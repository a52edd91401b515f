//! Sparkplug B host: protobuf payloads → samples, with the edge-node state
//! machine the specification asks of a host application.
//!
//! - `NBIRTH`/`DBIRTH` define metric names, aliases and types (and carry
//!   current values, which count as samples).
//! - `NDATA`/`DDATA` metrics are resolved through the aliases of the birth.
//! - A `seq` gap, an alias never born, or data from a node we have not seen
//!   born trigger a rebirth request (`NCMD` with `Node Control/Rebirth = true`),
//!   at most once per [`REBIRTH_HOLDOFF_MS`] per node.
//! - `NDEATH` (unless its `bdSeq` is the previous session's) and `DDEATH` mark every
//!   tag of the node or device stale: a bad-quality sample at that instant.
//! - `is_historical` metrics are late data: they land in their own windows
//!   (and correct them) without changing what the host considers current.
//!
//! The protobuf types below follow the field numbers of Eclipse Tahu's
//! `sparkplug_b.proto` (proto2); only what a host reads is declared, and the
//! dataset/template/extension values are kept as opaque bytes.

mod host;
mod proto;
mod topic;

pub use host::*;
pub use proto::*;
pub use topic::*;

/// A host asks one node for rebirth at most this often.
pub const REBIRTH_HOLDOFF_MS: i64 = 5_000;

#[cfg(test)]
mod tests;
