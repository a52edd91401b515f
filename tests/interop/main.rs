//! Interop suites against independent peers, installed by `.ci/run`:
//! Mosquitto and a Python Sparkplug B node ([`mosquitto`]), a Python asyncua
//! OPC UA server ([`asyncua`]), a pymodbus Modbus TCP server ([`modbus`]), Python's http.server as a work-order
//! endpoint ([`webhook`]), Python's deltalake reading the lake's Delta tables
//! ([`delta`]), moto's S3 server holding it ([`s3`]). Run with `cargo test --features interop
//! --test interop`.

#[path = "../common/mod.rs"]
mod common;

mod asyncua;
mod bacnet;
mod delta;
mod modbus;
mod mosquitto;
mod s3;
mod webhook;
