//! `[metrics]`: derived per-window columns, each an expression over the
//! window's columns and the metrics before it.

use super::loader::Loader;
use super::plan::{row_scope, MetricPlan};
use crate::expr::{ColType, Scope};
use crate::model::did_you_mean;

/// Validates `[metrics]`; also returns the scope of the window row with
/// every metric (what rules' expressions see).
pub(super) fn metrics(
    l: &mut Loader<'_>,
    raw: &toml::Table,
    asset_extra: &[(String, ColType)],
) -> (Vec<MetricPlan>, Scope) {
    let mut scope = row_scope(asset_extra);
    let mut metrics = Vec::new();
    for (name, v) in raw.iter() {
        let key = format!("metrics.{name}");
        let Some(src) = v.as_str() else {
            l.at_value(
                &key,
                format!(
                    "wrong type: {}, expected an expression string",
                    v.type_str()
                ),
                None,
            );
            continue;
        };
        if scope.slot(name).is_some() {
            l.at(
                &key,
                format!("metric `{name}` shadows a column of the same name"),
                Some("pick another name".into()),
            );
            continue;
        }
        let result = l.expr(&key, src, &scope, None).unwrap_or(ColType::Num);
        scope.push(name, result);
        metrics.push(MetricPlan {
            name: name.clone(),
            expr: src.to_string(),
            result,
        });
    }
    (metrics, scope)
}

/// The index of numeric metric `name`, reported at `key` when there is none.
pub(super) fn metric_index(
    l: &mut Loader<'_>,
    metrics: &[MetricPlan],
    key: &str,
    name: &str,
) -> usize {
    match metrics.iter().position(|m| m.name == name) {
        Some(i) if metrics[i].result == ColType::Num => i,
        Some(_) => {
            l.at_value(key, format!("metric `{name}` is not a number"), None);
            0
        }
        None => {
            let hint = did_you_mean(name, metrics.iter().map(|m| m.name.as_str()))
                .or_else(|| Some("name a metric from `[metrics]`".into()));
            l.at_value(key, format!("unknown metric `{name}`"), hint);
            0
        }
    }
}
