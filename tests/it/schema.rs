//! The JSON Schema of dataflow files (issue 32): `plantflow schema` prints
//! what `schemas/dataflow.schema.json` holds; an independent validator (the
//! `jsonschema` crate) accepts every file in `dataflows/` and rejects a
//! misspelt key, a key in the wrong table and an unknown kind.

use std::path::Path;

use crate::common::*;

fn printed() -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(&printed()).unwrap();
    jsonschema::draft202012::new(&schema).expect("a valid JSON Schema")
}

/// A TOML text as the JSON a schema validator reads.
fn json_of(text: &str) -> serde_json::Value {
    serde_json::to_value(toml::from_str::<toml::Value>(text).unwrap()).unwrap()
}

/// The validator's errors for a TOML text, as text.
fn errors(v: &jsonschema::Validator, text: &str) -> Vec<String> {
    v.iter_errors(&json_of(text))
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_published_schema_is_what_plantflow_schema_prints() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/dataflow.schema.json");
    let now = printed();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != now && std::env::var_os("PLANTFLOW_BLESS").is_some() {
        std::fs::write(&path, &now).unwrap();
        return;
    }
    assert!(
        committed == now,
        "schemas/dataflow.schema.json is not `plantflow schema` (PLANTFLOW_BLESS=1 rewrites it)"
    );
}

#[test]
fn every_dataflow_file_validates_against_the_schema() {
    let v = validator();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let errs = errors(&v, &text);
            assert!(errs.is_empty(), "{}: {errs:#?}", e.path().display());
            n += 1;
        }
    }
    assert!(n >= 10, "only {n} dataflow files");
}

#[test]
fn a_misspelt_key_is_rejected() {
    let v = validator();
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    assert!(errors(&v, &text).is_empty());
    let cases = [
        // A key of [window], misspelt.
        (
            "allowed_lateness = ",
            "allowed_latness = ",
            "allowed_latness",
        ),
        // A source's key, misspelt.
        (
            "path = \"${INPUT_DIR}/${SAMPLES_FILE",
            "pathh = \"${INPUT_DIR}/${SAMPLES_FILE",
            "pathh",
        ),
        // A top-level key, misspelt.
        ("currency = ", "curency = ", "curency"),
        // A source kind nobody knows.
        ("type = \"replay\"", "type = \"replai\"", "replai"),
    ];
    for (from, to, what) in cases {
        assert!(text.contains(from), "{from}");
        let errs = errors(&v, &text.replacen(from, to, 1));
        assert!(!errs.is_empty(), "`{what}` accepted");
        assert!(
            errs.iter()
                .any(|e| e.contains(what) || e.contains("/sources/0")),
            "`{what}`: {errs:#?}"
        );
    }
    // A [sources.format] key in the wrong place and one misspelt.
    let with_format = text.replacen(
        "path = \"${INPUT_DIR}/${SAMPLES_FILE:-samples.csv}\"",
        "path = \"x.csv\"\n[sources.format]\nlayout = \"wide\"\ntime_zone = \"Europe/Berlin\"",
        1,
    );
    assert!(
        errors(&v, &with_format).is_empty(),
        "{:#?}",
        errors(&v, &with_format)
    );
    let typo = with_format.replace("time_zone", "timezone");
    assert!(
        !errors(&v, &typo).is_empty(),
        "a misspelt format key accepted"
    );
}
