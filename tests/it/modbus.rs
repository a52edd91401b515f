//! The `modbus` source's table (issue 29): addresses past 65535, registers
//! that overlap, types and bit fields that do not fit, unit ids and request
//! sizes the protocol does not have are config errors at their line (exit
//! 78). Polling itself is tested against pymodbus in `tests/interop/modbus.rs`.

use crate::common::*;

const DEVICE: &str = r#"[[sources]]
type = "modbus"
id = "field"

[[sources.devices]]
name = "m1"
host = "127.0.0.1:5020"
"#;

#[test]
fn a_wrong_modbus_map_is_a_config_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let reg =
        |body: &str| format!("{DEVICE}\n[[sources.devices.registers]]\ntag = \"m1/a\"\n{body}\n");
    let two = |a: &str, b: &str| {
        format!(
            "{DEVICE}\n[[sources.devices.registers]]\ntag = \"m1/a\"\n{a}\n\n[[sources.devices.registers]]\ntag = \"m1/b\"\n{b}\n"
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            reg("address = 65535\ntype = \"f32\""),
            "address",
            "address 65535 is outside 0–65535 (a f32 takes 2 registers)",
        ),
        (reg("address = -1"), "address", "address -1 is outside 0–65535"),
        (
            two("address = 10\ntype = \"f32\"", "address = 11"),
            "address",
            "holding register 11 (`m1/b`) overlaps holding 10–11 (`m1/a`)",
        ),
        (reg("address = 0\ntype = \"float\""), "type", "unknown register type `float`"),
        (
            reg("address = 0\ntype = \"f32\"\nbit = 3"),
            "bit",
            "a bit field is bit 0–15 of a u16 or i16 register",
        ),
        (
            reg("address = 0\ntype = \"f32\"\ncounter = true"),
            "counter",
            "a counter is an unsigned integer register",
        ),
        (
            reg("address = 0\ntable = \"coil\"\ntype = \"u16\""),
            "type",
            "a coil is one bit: its type is bool",
        ),
        (reg("address = 0\ntable = \"holdings\""), "table", "unknown Modbus table `holdings`"),
        (
            reg("address = 0\ngroup = \"fast\""),
            "group",
            "unknown poll group `fast`",
        ),
        (
            format!("{DEVICE}unit = 300\nregisters = [{{ tag = \"x\", address = 0 }}]\n"),
            "unit",
            "unit id 300 is outside 0–255",
        ),
        (
            format!("{DEVICE}max_read = 200\nregisters = [{{ tag = \"x\", address = 0 }}]\n"),
            "max_read",
            "max_read must be 1–125 registers",
        ),
        (
            format!("{DEVICE}map = \"pm5560\"\n"),
            "map",
            "unknown register map `pm5560`",
        ),
        (
            format!(
                "{DEVICE}map = \"meter\"\n\n[[sources.devices]]\nname = \"m2\"\nhost = \"127.0.0.1:5020\"\nmap = \"meter\"\n\n[[sources.maps]]\nname = \"meter\"\n\n[[sources.maps.registers]]\ntag = \"kw\"\naddress = 0\n"
            ),
            "tag",
            "tag `kw` is mapped twice (devices `m1` and `m2`)",
        ),
        (
            format!(
                "{DEVICE}registers = [{{ tag = \"x\", address = 0 }}]\n\n[sources.devices.time]\naddress = 1\ntype = \"u64\"\nunit = \"us\"\n"
            ),
            "unit",
            "unknown time unit `us`",
        ),
        (
            format!(
                "{DEVICE}\n[sources.devices.time]\naddress = 0\ntype = \"u64\"\nunit = \"ms\"\n\n[[sources.devices.registers]]\ntag = \"x\"\naddress = 3\n"
            ),
            "address",
            "holding register 3 (`x`) overlaps holding 0–3 (`(device time)`)",
        ),
    ];
    for (table, key, message) in cases {
        let df = dir.path().join("modbus.toml");
        std::fs::write(&df, format!("{text}\n{table}")).unwrap();
        assert_config_error(&df, &fixture_dir(), key, message);
    }
}
