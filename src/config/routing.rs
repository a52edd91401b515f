//! `[lifecycle]` (the action status file) and `[[routing]]` (the ownership
//! matrix: the first matching route overrides a rule's action defaults).

use super::loader::Loader;
use super::plan::{LifecyclePlan, RoutePlan, ACTION_TYPES, OWNERS, VALUE_CATEGORIES};
use super::raw::{RawLifecycle, RawRoute};

const ROUTE_KEYS: &[&str] = &[
    "category",
    "kind",
    "site",
    "owner",
    "action_type",
    "value_category",
];

/// Validates `[lifecycle]`.
pub(super) fn lifecycle(l: &mut Loader<'_>, raw: Option<toml::Value>) -> Option<LifecyclePlan> {
    match raw {
        None => None,
        Some(v) => l
            .de::<RawLifecycle>("lifecycle", v, &["path"])
            .map(|lc| LifecyclePlan {
                path: l.resolve_path(&lc.path),
            }),
    }
}

/// Validates `[[routing]]`.
pub(super) fn routing(l: &mut Loader<'_>, raw: Vec<toml::Value>) -> Vec<RoutePlan> {
    let mut routing = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let key = format!("routing[{i}]");
        if let Some(r) = l.de::<RawRoute>(&key, v, ROUTE_KEYS) {
            if let Some(o) = &r.owner {
                l.one_of(&format!("{key}.owner"), o, OWNERS, "owner");
            }
            if let Some(o) = &r.action_type {
                l.one_of(
                    &format!("{key}.action_type"),
                    o,
                    ACTION_TYPES,
                    "action type",
                );
            }
            if let Some(o) = &r.value_category {
                l.one_of(
                    &format!("{key}.value_category"),
                    o,
                    VALUE_CATEGORIES,
                    "value category",
                );
            }
            routing.push(RoutePlan {
                category: r.category,
                kind: r.kind,
                site: r.site,
                owner: r.owner,
                action_type: r.action_type,
                value_category: r.value_category,
            });
        }
    }
    routing
}
