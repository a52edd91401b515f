//! Sources of files: historian replays, context tables and action status
//! updates, each on a blocking thread of its own, handing normalised rows to
//! the engine through [`ingest`](crate::ingest). The protocol sources live in
//! their own folders ([`mqtt`](crate::mqtt), [`opcua`](crate::opcua)).
//!
//! - [`replay`]: CSV or Parquet files of `ts,tag,value,quality`, optionally followed (tailed).
//! - [`context`]: context tables (assets, tariff, production, maintenance) from CSV.
//! - [`status`]: action status updates, JSON lines, tailed.
//!
//! Every bad record becomes a `dead_letter` row with a reason and a counter
//! increment; nothing panics on input.

pub mod context;
pub mod replay;
pub mod status;
