//! Simulated plant infrastructure for the demo and for tests: real servers,
//! not mocks.
//!
//! - [`broker`]: an embedded MQTT broker (rumqttd) on loopback.

pub mod broker;
