//! Sources: async producers that read the outside world (read-only) and hand
//! normalised samples to the engine's [`Ingest`](crate::engine::Ingest).
//!
//! - [`replay`]: CSV or Parquet files of `ts,tag,value,quality`, optionally followed (tailed).
//! - [`context`]: context tables (assets, tariff, production, maintenance) from CSV.
//! - [`status`]: action status updates, JSON lines, tailed.
//! - [`mqtt`]: MQTT subscriptions (JSON, numbers, Sparkplug B, context edits).
//! - [`opcua`]: OPC UA subscriptions (security, browse discovery, gaps).
//!
//! Every bad record becomes a `dead_letter` row with a reason and a counter
//! increment; nothing panics on input.

pub mod context;
pub mod mqtt;
pub mod normalize;
pub mod opcua;
pub mod replay;
pub mod status;

/// A credential that never prints (Debug shows `***`), shared by the
/// protocol sources.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}
