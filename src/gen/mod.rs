//! Generators of test and benchmark inputs.

pub mod workload;
