//! plantflow's MQTT component (floor 4, see `docs/ARCHITECTURE.md`): the
//! source (JSON, Sparkplug B) and the `mqtt_publish` sink, one protocol in
//! one crate.

use plantflow_core::{config, ingest, model};

pub mod mqtt;
