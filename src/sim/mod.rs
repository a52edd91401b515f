//! Simulated plant infrastructure for the demo and for tests: real servers,
//! not mocks.
//!
//! - [`broker`]: an embedded MQTT broker (rumqttd) on loopback.
//! - [`opcua`]: the simulated plant's OPC UA server (async-opcua).
//! - [`plant`]: the demo plant's assets, schedule and injected problems.

pub mod broker;
pub mod opcua;
pub mod plant;
