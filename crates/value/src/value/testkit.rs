//! Helpers for tests of the value layer and of the engine's rule operator
//! (built for this crate's tests and with the `testkit` feature): a small
//! dataflow's compiled rule, assets and rule inputs.

use std::sync::Arc;

use crate::model::{AssetRow, F64};
use crate::value::rules::{Compiled, RuleInput};

/// The workspace root, where `dataflows/` and `tests/fixtures/` live.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The rule `spread` (per asset and hour: sum, mean, min and max of the
/// windows' means; value `hi - lo`) over workload v1's small context.
pub fn compiled() -> Compiled {
    let dir = tempfile::tempdir().unwrap();
    let fixture = workspace_root().join("tests/fixtures/workload_v1_small");
    let flow = dir.path().join("flow.toml");
    std::fs::write(
        &flow,
        r#"name = "fold"
[[sources]]
type = "replay"
id = "samples"
path = "${INPUT_DIR}/samples.csv"
[context.assets]
path = "${INPUT_DIR}/assets.csv"
[context.tariff]
path = "${INPUT_DIR}/tariff.csv"
[window]
size = "1m"
allowed_lateness = "5s"
[[rules]]
id = "spread"
group_by = ["asset"]
period = "1h"
condition = "windows >= 2.0"
[rules.measures]
total = { sum = "mean" }
avg = { mean = "mean" }
lo = { min = "mean" }
hi = { max = "mean" }
[rules.action]
owner = "operations"
action_type = "further_study"
value_category = "energy_cost"
value = "hi - lo"
[[sinks]]
type = "parquet"
id = "lake"
path = "${OUT_DIR}"
"#,
    )
    .unwrap();
    let env = |k: &str| match k {
        "INPUT_DIR" => Some(fixture.display().to_string()),
        "OUT_DIR" => Some(dir.path().display().to_string()),
        _ => None,
    };
    let plan = crate::config::load_plan_with_env(&flow, &env).expect("test flow loads");
    Compiled::new(&plan)
}

/// An asset row `a1` of `kind` for `tag`.
pub fn asset(tag: &str, kind: &str) -> Arc<AssetRow> {
    Arc::new(AssetRow {
        tag: tag.into(),
        asset: "a1".into(),
        site: "s1".into(),
        line: "l1".into(),
        kind: kind.into(),
        standby_kw: F64(0.0),
        extra: Box::default(),
    })
}

/// A window's inputs: the rule's four measures (all `mean`) and its maintenance flag.
pub fn input(mean: f64, maint: bool, a: &Arc<AssetRow>) -> RuleInput {
    let m = F64(mean);
    (
        smallvec::smallvec![m, m, m, m, F64(if maint { 1.0 } else { 0.0 })],
        a.clone(),
    )
}
