//! Simulated plant infrastructure for the demo and for tests: real servers,
//! not mocks.
//!
//! - [`broker`]: an embedded MQTT broker (rumqttd) on loopback.
//! - [`crew`]: the demo's crew, answering actions as people would.
//! - [`edge`]: an MQTT publisher and a Sparkplug B edge node.
//! - [`meter`]: a logging power meter on Modbus TCP (tokio-modbus).
//! - [`opcua`]: the simulated plant's OPC UA server (async-opcua).
//! - [`plant`]: the demo plant's assets, schedule and injected problems.

pub mod broker;
pub mod crew;
pub mod edge;
pub mod meter;
pub mod opcua;
pub mod opcua_cli;
pub mod plant;
