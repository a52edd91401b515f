//! `[memory]`: how much memory the node may use before it stops taking
//! input (the degraded mode), and how long it waits for memory to come
//! down before it ends the run.

use serde::Deserialize;

use super::loader::Loader;
use super::units;

/// A validated `[memory]`.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// Above this many bytes in use the sources stop taking input; `None`:
    /// no limit.
    pub max_bytes: Option<u64>,
    /// Where the limit came from: `memory.max`, or the container's.
    pub from: &'static str,
    /// Paused this long and still above the limit: the run ends.
    pub grace_ms: u64,
}

/// Paused this long by default before the run ends.
pub const DEFAULT_GRACE_MS: u64 = 60_000;

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawMemory {
    #[serde(default)]
    max: Option<String>,
    #[serde(default)]
    grace: Option<String>,
}

/// Validates `[memory]`: `max` (a size of at least 1 MiB, or `"none"`) and
/// `grace` (a positive duration). Without `max`, the limit is 90 % of the
/// container's (cgroup v2 `memory.max`) when there is one.
pub(super) fn memory(l: &mut Loader<'_>, raw: Option<toml::Value>) -> MemoryPlan {
    let mut plan = MemoryPlan {
        max_bytes: container_limit().map(|b| b / 10 * 9),
        from: "90 % of the container's memory.max",
        grace_ms: DEFAULT_GRACE_MS,
    };
    let Some(v) = raw else { return plan };
    let Some(m) = l.de::<RawMemory>("memory", v, &["max", "grace"]) else {
        return plan;
    };
    match m.max.as_deref() {
        None => {}
        Some("none") => plan.max_bytes = None,
        Some(s) => match units::parse_size_bytes(s) {
            Ok(b) if b >= 1 << 20 => {
                plan.max_bytes = Some(b);
                plan.from = "memory.max";
            }
            Ok(_) => l.at_value(
                "memory.max",
                format!("`{s}` is below 1MiB"),
                Some("a size such as `max = \"2GiB\"`, or `\"none\"`".into()),
            ),
            Err(e) => l.at_value("memory.max", e, Some(units::SIZE_HINT.into())),
        },
    }
    if let Some(s) = &m.grace {
        if let Some(ms) = l.positive_duration("memory.grace", s) {
            plan.grace_ms = ms as u64;
        }
    }
    plan
}

/// The memory limit of this process's cgroup (v2), if it has one.
fn container_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let file = std::path::Path::new("/sys/fs/cgroup")
        .join(path.trim_start_matches('/'))
        .join("memory.max");
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}
