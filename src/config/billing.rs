//! `[billing]`: energy and demand cost per site and billing period.

use super::loader::Loader;
use super::metrics::metric_index;
use super::plan::{BillPeriod, BillingPlan, MetricPlan};
use super::raw::RawBilling;

const BILLING_KEYS: &[&str] = &[
    "energy",
    "demand_charge_per_kw",
    "demand_interval",
    "period",
];

/// Validates `[billing]`; `size_ms` is the window size (a demand interval
/// is a whole number of windows).
pub(super) fn billing(
    l: &mut Loader<'_>,
    raw: Option<toml::Value>,
    metrics: &[MetricPlan],
    size_ms: i64,
) -> Option<BillingPlan> {
    match raw {
        None => None,
        Some(v) => l.de::<RawBilling>("billing", v, BILLING_KEYS).map(|b| {
            let energy_metric = metric_index(l, metrics, "billing.energy", &b.energy);
            let interval_ms = match &b.demand_interval {
                Some(d) => l.duration("billing.demand_interval", d).unwrap_or(900_000),
                None => 900_000,
            };
            if interval_ms <= 0 || (size_ms > 0 && interval_ms % size_ms != 0) {
                l.at_value(
                    "billing.demand_interval",
                    "the demand interval must be a positive multiple of the window size".into(),
                    None,
                );
            }
            let period = match b.period.as_deref().unwrap_or("month") {
                "day" => BillPeriod::Day,
                "month" => BillPeriod::Month,
                other => {
                    l.one_of("billing.period", other, &["day", "month"], "billing period");
                    BillPeriod::Month
                }
            };
            let rate = b.demand_charge_per_kw.unwrap_or(0.0);
            if !(rate.is_finite() && rate >= 0.0) {
                l.at_value(
                    "billing.demand_charge_per_kw",
                    "the demand charge must be a non-negative number".into(),
                    None,
                );
            }
            BillingPlan {
                energy_metric,
                demand_charge_per_kw: rate,
                interval_ms,
                period,
            }
        }),
    }
}
