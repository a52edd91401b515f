//! `[tag_quality]`: when a tag counts as stale, flat-lining or out of
//! range, and how often its snapshot goes to the `tag_quality` table.

use serde::Deserialize;

use super::loader::Loader;

/// A validated `[tag_quality]`.
#[derive(Clone, Debug)]
pub struct TagQualityPlan {
    /// No sample for this many of its usual intervals: `stale`.
    pub stale_after: f64,
    /// Unchanged this long (event time): `flatline`; 0: never.
    pub flatline_after_ms: i64,
    /// A snapshot each time event time passes a multiple of this.
    pub every_ms: i64,
    pub ranges: Vec<RangePlan>,
}

impl PartialEq for TagQualityPlan {
    fn eq(&self, o: &Self) -> bool {
        self.stale_after == o.stale_after
            && self.flatline_after_ms == o.flatline_after_ms
            && self.every_ms == o.every_ms
            && self.ranges.len() == o.ranges.len()
    }
}

impl Default for TagQualityPlan {
    fn default() -> Self {
        TagQualityPlan {
            stale_after: 5.0,
            flatline_after_ms: 6 * 3_600_000,
            every_ms: 3_600_000,
            ranges: Vec::new(),
        }
    }
}

/// Bounds for the tags a range matches (by name pattern, kind or both).
#[derive(Clone, Debug)]
pub struct RangePlan {
    pub tags: Option<globset::GlobMatcher>,
    pub kind: Option<String>,
    pub min: f64,
    pub max: f64,
}

impl RangePlan {
    pub fn matches(&self, tag: &str, kind: &str) -> bool {
        self.tags.as_ref().is_none_or(|g| g.is_match(tag))
            && self.kind.as_deref().is_none_or(|k| k == kind)
    }
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawTagQuality {
    stale_after: Option<f64>,
    flatline_after: Option<String>,
    every: Option<String>,
    #[serde(default)]
    range: Vec<RawRange>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawRange {
    tags: Option<String>,
    kind: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
}

pub(super) fn tag_quality(l: &mut Loader<'_>, raw: Option<toml::Value>) -> TagQualityPlan {
    let mut plan = TagQualityPlan::default();
    let Some(v) = raw else { return plan };
    let keys = ["stale_after", "flatline_after", "every", "range"];
    let Some(t) = l.de::<RawTagQuality>("tag_quality", v, &keys) else {
        return plan;
    };
    if let Some(n) = t.stale_after {
        if n.is_finite() && n >= 1.0 {
            plan.stale_after = n;
        } else {
            l.at_value(
                "tag_quality.stale_after",
                format!("{n} is below 1 interval"),
                Some("e.g. `stale_after = 5` (five of the tag's usual intervals)".into()),
            );
        }
    }
    if let Some(s) = &t.flatline_after {
        if let Some(ms) = l.duration("tag_quality.flatline_after", s) {
            plan.flatline_after_ms = ms;
        }
    }
    if let Some(s) = &t.every {
        if let Some(ms) = l.positive_duration("tag_quality.every", s) {
            plan.every_ms = ms;
        }
    }
    for (i, r) in t.range.into_iter().enumerate() {
        let key = format!("tag_quality.range[{i}]");
        if r.tags.is_none() && r.kind.is_none() {
            l.at(
                &key,
                "a range needs `tags` (a pattern) or `kind`".into(),
                None,
            );
            continue;
        }
        let tags = r.tags.as_deref().and_then(|p| match globset::Glob::new(p) {
            Ok(g) => Some(g.compile_matcher()),
            Err(e) => {
                l.at_value(
                    &format!("{key}.tags"),
                    format!("`{p}` is not a pattern: {e}"),
                    None,
                );
                None
            }
        });
        let (min, max) = (
            r.min.unwrap_or(f64::NEG_INFINITY),
            r.max.unwrap_or(f64::INFINITY),
        );
        if r.min.is_none() && r.max.is_none() || min.is_nan() || max.is_nan() || min > max {
            l.at(
                &key,
                "a range needs `min`, `max` or both, with min ≤ max".into(),
                Some("e.g. `min = 0`, `max = 500`".into()),
            );
            continue;
        }
        plan.ranges.push(RangePlan {
            tags,
            kind: r.kind,
            min,
            max,
        });
    }
    plan
}
