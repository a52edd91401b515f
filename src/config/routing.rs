//! `[lifecycle]` (the action status file), `[[routing]]` (the ownership
//! matrix: the first matching route overrides a rule's action defaults) and
//! `[dead_letter]` (how much of bad input is kept).

use super::loader::Loader;
use super::plan::{LifecyclePlan, RoutePlan, ACTION_TYPES, OWNERS, VALUE_CATEGORIES};
use super::raw::{RawDeadLetter, RawLifecycle, RawRoute};
use super::units;
use crate::model::DeadLetterLimits;

const ROUTE_KEYS: &[&str] = &[
    "category",
    "kind",
    "site",
    "owner",
    "action_type",
    "value_category",
];

/// Validates `[lifecycle]`: the status file (optional) and how long an
/// action may stay open unacknowledged (`expire_after`, default 90 days;
/// `"0s"`: never). Returns the file's plan and the expiry in ms.
pub(super) fn lifecycle(
    l: &mut Loader<'_>,
    raw: Option<toml::Value>,
) -> (Option<LifecyclePlan>, Option<i64>) {
    let Some(v) = raw else {
        return (None, Some(DEFAULT_EXPIRE_MS));
    };
    let Some(lc) = l.de::<RawLifecycle>("lifecycle", v, &["path", "expire_after"]) else {
        return (None, Some(DEFAULT_EXPIRE_MS));
    };
    let plan = lc.path.map(|p| LifecyclePlan {
        path: l.output_path("lifecycle.path", &p),
    });
    let expire = match &lc.expire_after {
        Some(s) => l.duration("lifecycle.expire_after", s).filter(|ms| *ms > 0),
        None => Some(DEFAULT_EXPIRE_MS),
    };
    (plan, expire)
}

/// How long an action may stay open with nobody acknowledging it, by default.
pub const DEFAULT_EXPIRE_MS: i64 = 90 * 86_400_000;

/// Validates `[dead_letter]`: `max_raw` (a size, 64 B to 1 MiB) and
/// `per_message` (1 to 100,000).
pub(super) fn dead_letter(l: &mut Loader<'_>, raw: Option<toml::Value>) -> DeadLetterLimits {
    let mut limits = DeadLetterLimits::default();
    let Some(v) = raw else { return limits };
    let Some(d) = l.de::<RawDeadLetter>("dead_letter", v, &["max_raw", "per_message"]) else {
        return limits;
    };
    if let Some(s) = &d.max_raw {
        match units::parse_size_bytes(s) {
            Ok(b) if (64..=1 << 20).contains(&b) => limits.max_raw = b as usize,
            Ok(_) => l.at_value(
                "dead_letter.max_raw",
                format!("`{s}` is out of range"),
                Some("from 64B to 1MiB, e.g. `max_raw = \"4KiB\"`".into()),
            ),
            Err(e) => l.at_value("dead_letter.max_raw", e, None),
        }
    }
    if let Some(n) = d.per_message {
        if (1..=100_000).contains(&n) {
            limits.per_message = n as usize;
        } else {
            l.at_value(
                "dead_letter.per_message",
                format!("{n} is out of range"),
                Some("from 1 to 100000 rows per message".into()),
            );
        }
    }
    limits
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
