//! `plantflow backtest` (issue 32): the same engine as `run`, so its actions
//! are a run's lake's actions over the same input, row for row; `--rule`
//! keeps one rule's; `--baseline` tells a stricter version of the rule apart
//! (the actions it no longer finds are the removed ones, counted here from
//! the lake); nothing is written but the page.

use std::collections::BTreeMap;

use crate::common::*;

fn backtest(args: &[&str], cwd: &std::path::Path) -> (Option<i32>, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .arg("backtest")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// (action_id → value, status) of JSON actions.
fn actions_of(v: &serde_json::Value) -> BTreeMap<String, (f64, String)> {
    v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action_id"].as_str().unwrap().to_string(),
                (
                    a["value"].as_f64().unwrap(),
                    a["status"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_backtest_finds_what_a_run_writes_and_tells_two_versions_apart() {
    let dir = tempfile::tempdir().unwrap();
    let df = dataflow("workload_v1.toml");
    let input = fixture_dir();
    let (code, stdout, stderr) = backtest(
        &[
            df.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let found: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let got = actions_of(&found);
    // The lake of a `run` over the same input.
    let out = tempfile::tempdir().unwrap();
    run(&df, &input, out.path(), 1);
    let lake = latest_actions(out.path());
    assert!(lake.len() >= 5, "{} actions", lake.len());
    assert_eq!(got.len(), lake.len());
    for ((id, _), a) in &lake {
        let _ = id;
        let (value, status) = &got[&a.action_id];
        assert_close(*value, a.value, &a.action_id);
        assert_eq!(status, &a.status, "{}", a.action_id);
    }
    // The page was written; the scratch lake was not kept.
    assert!(std::fs::read_to_string(dir.path().join("backtest.html"))
        .unwrap()
        .contains("<svg"));
    // A stricter version of the rule: waste above 2 kWh instead of 1.
    let text = std::fs::read_to_string(&df).unwrap();
    assert!(text.contains("condition = \"waste_kwh > 1.0\""));
    let strict = dir.path().join("strict.toml");
    std::fs::write(
        &strict,
        text.replace(
            "condition = \"waste_kwh > 1.0\"",
            "condition = \"waste_kwh > 2.0\"",
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = backtest(
        &[
            strict.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--baseline",
            df.to_str().unwrap(),
            "--rule",
            "idle_running",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let removed: Vec<&str> = v["baseline"]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    // The oracle: the lake's actions whose waste was 2 kWh or less.
    let mut want: Vec<&str> = lake
        .values()
        .filter(|a| a.evidence["measures"]["waste_kwh"].as_f64().unwrap() <= 2.0)
        .map(|a| a.action_id.as_str())
        .collect();
    want.sort();
    let mut removed = removed;
    removed.sort();
    assert!(!want.is_empty(), "the stricter rule removes something");
    assert_eq!(removed, want);
    assert!(v["baseline"]["added"].as_array().unwrap().is_empty());
    // Text output: totals and the comparison.
    let (code, stdout, _) = backtest(
        &[
            strict.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--baseline",
            df.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("by owner and action type") && stdout.contains("removed"),
        "{stdout}"
    );
    // A rule the file does not have: a config error.
    let (code, _, stderr) = backtest(
        &[
            df.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--rule",
            "nope",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("no rule `nope`"), "{stderr}");
}
