//! `[window]`: the pre-aggregation windows, lateness, retention, the
//! quality policy and the spill tier.

use std::path::PathBuf;

use super::loader::Loader;
use super::plan::{QualityPolicy, WindowPlan};
use super::raw::RawWindow;

const WINDOW_KEYS: &[&str] = &[
    "size",
    "allowed_lateness",
    "quality",
    "retention",
    "max_future",
    "spill_after",
    "state_dir",
    "checkpoint_interval",
];

/// Validates `[window]`.
pub(super) fn window(l: &mut Loader<'_>, raw: toml::Value) -> WindowPlan {
    let w: RawWindow = l.de("window", raw, WINDOW_KEYS).unwrap_or(RawWindow {
        size: "1m".into(),
        allowed_lateness: "0s".into(),
        quality: None,
        retention: None,
        max_future: None,
        spill_after: None,
        state_dir: None,
        checkpoint_interval: None,
    });
    let size_ms = l.duration("window.size", &w.size).unwrap_or(60_000);
    const MAX_WINDOW_MS: i64 = 49 * 86_400_000;
    if size_ms <= 0 {
        l.at_value("window.size", "window size must be positive".into(), None);
    }
    // A window keeps its rows' times as 32-bit offsets into it.
    if size_ms > MAX_WINDOW_MS {
        l.at_value(
            "window.size",
            "window size must be at most 49 days".into(),
            Some("aggregate longer spans with a rule `period` over shorter windows".into()),
        );
    }
    let lateness_ms = l
        .duration("window.allowed_lateness", &w.allowed_lateness)
        .unwrap_or(0);
    let retention_ms = match &w.retention {
        Some(s) => l.duration("window.retention", s).unwrap_or(3_600_000),
        None => 3_600_000,
    };
    if size_ms > 0 && retention_ms % size_ms != 0 {
        l.at_value(
            "window.retention",
            format!("retention must be a multiple of the window size ({size_ms} ms)"),
            None,
        );
    }
    let max_future_ms = match &w.max_future {
        Some(s) => l.duration("window.max_future", s).unwrap_or(86_400_000),
        None => 86_400_000,
    };
    // Cold state goes to the state directory after 10 minutes by default;
    // "0s" keeps everything in memory.
    let spill_after_ms = match &w.spill_after {
        Some(s) => l.duration("window.spill_after", s),
        None => Some(DEFAULT_SPILL_MS),
    };
    let spill_after_ms = spill_after_ms.filter(|ms| *ms > 0);
    let state_dir = w.state_dir.as_ref().map(PathBuf::from);
    // A durable node's checkpoints: every 10 s by default, "0s" for none.
    let checkpoint_ms = match &w.checkpoint_interval {
        Some(s) => l.duration("window.checkpoint_interval", s),
        None => Some(DEFAULT_CHECKPOINT_MS),
    };
    let checkpoint_ms = checkpoint_ms.filter(|ms| *ms > 0);
    let quality = match w.quality.as_deref().unwrap_or("drop_bad") {
        "keep_all" => QualityPolicy::KeepAll,
        "drop_bad" => QualityPolicy::DropBad,
        "good_only" => QualityPolicy::GoodOnly,
        other => {
            l.one_of(
                "window.quality",
                other,
                &["keep_all", "drop_bad", "good_only"],
                "quality policy",
            );
            QualityPolicy::DropBad
        }
    };
    WindowPlan {
        size_ms,
        lateness_ms,
        retention_ms,
        max_future_ms,
        quality,
        spill_after_ms,
        state_dir,
        checkpoint_ms,
    }
}

/// After how long closed windows, rule periods and actions go to the state
/// directory by default.
pub const DEFAULT_SPILL_MS: i64 = 600_000;

/// How often a durable node checkpoints its state by default.
pub const DEFAULT_CHECKPOINT_MS: i64 = 10_000;
