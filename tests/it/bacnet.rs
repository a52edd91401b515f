//! The `bacnet` source's table (issue 29): object types it does not read,
//! instances past 4194302, units BACnet does not have (or on objects
//! without units), an object or tag mapped twice and addresses that are not
//! IPv4 are config errors at their line (exit 78). Reading devices is
//! tested against bacpypes3 in `tests/interop/bacnet.rs`.

use crate::common::*;

const DEVICE: &str = r#"[[sources]]
type = "bacnet"
id = "bms"

[[sources.devices]]
name = "ahu1"
instance = 1001
"#;

#[test]
fn a_wrong_bacnet_map_is_a_config_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let point =
        |body: &str| format!("{DEVICE}\n[[sources.devices.points]]\ntag = \"ahu1/a\"\n{body}\n");
    let two = |a: &str, b: &str| {
        format!(
            "{DEVICE}\n[[sources.devices.points]]\ntag = \"ahu1/a\"\n{a}\n\n[[sources.devices.points]]\ntag = \"ahu1/b\"\n{b}\n"
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            point("object = \"trend-log:1\""),
            "object",
            "`trend-log` is not an object type the source reads",
        ),
        (point("object = \"analog-input\""), "object", "is not `<object type>:<instance>`"),
        (
            point("object = \"analog-input:4194303\""),
            "object",
            "`4194303` is not an object instance (0–4194302)",
        ),
        (
            point("object = \"analog-input:1\"\nunit = \"degrees-kelvinish\""),
            "unit",
            "`degrees-kelvinish` is not a BACnet engineering unit",
        ),
        (
            point("object = \"binary-value:1\"\nunit = \"kilowatts\""),
            "unit",
            "binary-value:1 has no units (only analog objects do)",
        ),
        (
            two("object = \"analog-input:1\"", "object = \"analog-input:1\""),
            "object",
            "object analog-input:1 is mapped twice on device `ahu1` (`ahu1/a` and `ahu1/b`)",
        ),
        (
            DEVICE.replace("instance = 1001", "instance = 4194303")
                + "points = [{ tag = \"x\", object = \"analog-input:1\" }]\n",
            "instance",
            "is not a number in 0–4194302",
        ),
        (
            format!("{DEVICE}address = \"ahu1.local\"\npoints = [{{ tag = \"x\", object = \"analog-input:1\" }}]\n"),
            "address",
            "`ahu1.local` is not an IPv4 address with an optional port",
        ),
        (
            DEVICE.replace("id = \"bms\"", "id = \"bms\"\nbind = \"0.0.0.0:99999\"")
                + "points = [{ tag = \"x\", object = \"analog-input:1\" }]\n",
            "bind",
            "`0.0.0.0:99999` is not an IPv4 address with an optional port",
        ),
        (format!("{DEVICE}map = \"ahu\"\n"), "map", "unknown point map `ahu`"),
        (
            format!(
                "{DEVICE}map = \"ahu\"\n\n[[sources.devices]]\nname = \"ahu2\"\ninstance = 1002\nmap = \"ahu\"\n\n[[sources.maps]]\nname = \"ahu\"\n\n[[sources.maps.points]]\ntag = \"sat\"\nobject = \"analog-value:1\"\n"
            ),
            "tag",
            "tag `sat` is mapped twice (devices `ahu1` and `ahu2`)",
        ),
        (
            format!(
                "{DEVICE}points = [{{ tag = \"x\", object = \"analog-input:1\" }}]\n\n[[sources.devices]]\nname = \"ahu2\"\ninstance = 1001\npoints = [{{ tag = \"y\", object = \"analog-input:1\" }}]\n"
            ),
            "name",
            "duplicate device `ahu2` (instance 1001)",
        ),
    ];
    for (table, key, message) in cases {
        let df = dir.path().join("bacnet.toml");
        std::fs::write(&df, format!("{text}\n{table}")).unwrap();
        assert_config_error(&df, &fixture_dir(), key, message);
    }
}
