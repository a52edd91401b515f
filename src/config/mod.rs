//! Dataflow config: TOML → raw structs → a validated [`Plan`].
//!
//! Loading collects *every* problem (unknown keys, wrong types, bad units,
//! unknown columns in expressions, expressions that do not type-check,
//! missing files) as [`Diagnostic`]s with file, line, column and key path,
//! then fails once. The CLI prints them and exits with code 78.
//!
//! This folder holds the loader every section reports through
//! ([`Loader`]), the core plan the engine and the value layer run
//! ([`Plan`]) and one validator per core section. It names no source or
//! sink: each component validates its own table with the [`Loader`], and
//! [`crate::dataflow`] puts a whole file together.

mod billing;
pub mod cluster;
mod context;
pub mod diagnostic;
mod http;
pub mod interp;
mod loader;
mod memory;
mod metrics;
mod plan;
pub mod raw;
mod routing;
mod rules;
pub mod spans;
pub mod tables;
mod tag_quality;
pub mod units;
mod window;

use std::path::Path;

pub use diagnostic::{ConfigErrors, Diagnostic};
pub use http::HttpPlan;
pub use loader::{credentials, strip_type, take_type, Loader};
pub use memory::MemoryPlan;
pub use plan::*;
use raw::RawDataflow;
pub use tag_quality::{RangePlan, TagQualityPlan};

/// Validates the core sections of a dataflow (everything but `sources` and
/// `sinks`, which [`crate::dataflow`] hands to their components first), in
/// file order, reporting through `l`. The plan holds defaults where a
/// section was wrong: use it only once [`Loader::finish`] says the file is valid.
pub fn plan(
    l: &mut Loader<'_>,
    file: &Path,
    raw: RawDataflow,
    env: &dyn Fn(&str) -> Option<String>,
) -> Plan {
    let (context, calendar) = context::context(l, raw.context, raw.timezone.as_deref());
    let window = window::window(l, raw.window);
    let (metrics, scope) = metrics::metrics(l, &raw.metrics, &context.asset_extra);
    let billing = billing::billing(l, raw.billing, &metrics, window.size_ms);
    let (lifecycle, expire_after_ms) = routing::lifecycle(l, raw.lifecycle);
    let routing = routing::routing(l, raw.routing);
    let dead_letter = routing::dead_letter(l, raw.dead_letter);
    let memory = memory::memory(l, raw.memory);
    let http = http::http(l, raw.http, env);
    let tag_quality = tag_quality::tag_quality(l, raw.tag_quality);
    let seen = rules::Seen {
        scope: &scope,
        metrics: &metrics,
        billing: billing.as_ref(),
        size_ms: window.size_ms,
        has_production: context.production.is_some(),
        expire_after_ms,
    };
    let rules = rules::rules(l, raw.rules, &seen);
    Plan {
        file: file.to_path_buf(),
        name: raw.name,
        description: raw.description,
        currency: raw.currency.unwrap_or_else(|| "EUR".into()),
        context,
        window,
        metrics,
        rules,
        calendar,
        billing,
        lifecycle,
        routing,
        dead_letter,
        memory,
        http,
        tag_quality,
    }
}
