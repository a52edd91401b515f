//! Verification: an action's outcome measured against its production-
//! normalised baseline (IPMVP option C, ASHRAE Guideline 14 limits).

use super::*;

impl ValueLayer {
    pub(super) fn outcome(
        &self,
        v: &VerifyPlan,
        a: &ReplayedAction,
        g: &GroupKey,
        done_at: i64,
    ) -> OutcomeRow {
        let gran_half = match v.granularity {
            Granularity::Hour => 1_800_000,
            Granularity::Day => 12 * 3_600_000,
            Granularity::Week => 84 * 3_600_000,
        };
        let baseline_end = self.bucket(v, a.opened_period).0;
        let baseline_start = self.bucket(v, baseline_end - v.baseline_ms + gran_half).0;
        let (ds, de) = self.bucket(v, done_at);
        let reporting_start = if ds == done_at { ds } else { de };
        let reporting_end = self
            .bucket(v, reporting_start + v.reporting_ms + gran_half)
            .0;
        let series = self.d.energy.get(g);
        let line = series
            .map(|s| s.line.clone())
            .unwrap_or_else(|| a.line.clone());
        let point = |b0: i64, b: &Bucket| {
            let b1 = self.bucket(v, b0).1;
            (
                b0,
                b1,
                mv::Point {
                    x: if v.units_driver {
                        self.units(&line, b0, b1)
                    } else {
                        0.0
                    },
                    kwh: b.kwh,
                    cost: b.cost,
                },
            )
        };
        let (mut base_b, mut rep_b) = (Vec::new(), Vec::new());
        if let Some(s) = series {
            for (b0, b) in s.buckets.range(baseline_start..baseline_end) {
                if b.windows > 0 {
                    base_b.push(point(*b0, b));
                }
            }
            for (b0, b) in s.buckets.range(reporting_start..reporting_end) {
                if b.windows > 0 && self.bucket(v, *b0).1 <= self.d.now {
                    rep_b.push(point(*b0, b));
                }
            }
        }
        let base: Vec<mv::Point> = base_b.iter().map(|b| b.2).collect();
        let rep: Vec<mv::Point> = rep_b.iter().map(|b| b.2).collect();
        let is_final = self.d.now >= reporting_end;
        // The event time the version's data reaches (the end of its last
        // complete reporting bucket; the reporting period's end once final;
        // else when the action was done), not the time of the step that
        // computed it: that depends on how far the watermark moved at once,
        // and a resumed run must compute the same row.
        let computed_at = match (is_final, rep_b.last()) {
            (true, _) => reporting_end,
            (false, Some(b)) => b.1,
            (false, None) => done_at,
        };
        let mut o = OutcomeRow {
            action_id: a.row.action_id.clone(),
            rule: a.row.rule.clone(),
            site: a.row.site.clone(),
            asset: a.row.asset.clone(),
            baseline_start,
            baseline_end,
            reporting_start,
            reporting_end,
            model: String::new(),
            n_baseline: base.len() as i64,
            n_reporting: rep.len() as i64,
            r2: None,
            cv_rmse: None,
            nmbe: None,
            baseline_kwh: None,
            actual_kwh: rep.iter().map(|p| p.kwh).sum(),
            avoided_kwh: None,
            avoided_cost: None,
            fractional_savings: None,
            fsu_68: None,
            fsu_90: None,
            verdict: "pending".into(),
            reason: String::new(),
            is_final,
            computed_at,
            buckets: Vec::new(),
        };
        match mv::fit(&base, v.units_driver) {
            Err(why) => {
                o.reason = why;
                if is_final {
                    o.verdict = "insufficient_data".into();
                }
            }
            Ok(fit) => {
                o.model = fit.model();
                if is_final {
                    let period = |name: &'static str, pts: &[(i64, i64, mv::Point)]| {
                        pts.iter()
                            .map(|(b0, b1, p)| OutcomeBucket {
                                bucket_start: *b0,
                                bucket_end: *b1,
                                period: name,
                                units: p.x,
                                measured_kwh: p.kwh,
                                predicted_kwh: fit.predict(p.x),
                                cost: p.cost,
                            })
                            .collect::<Vec<_>>()
                    };
                    o.buckets = period("baseline", &base_b);
                    o.buckets.extend(period("reporting", &rep_b));
                }
                o.r2 = Some(fit.r2);
                o.cv_rmse = Some(fit.cv_rmse);
                o.nmbe = Some(fit.nmbe);
                if rep.is_empty() {
                    o.reason = "no complete reporting period yet".into();
                    if is_final {
                        o.verdict = "insufficient_data".into();
                        o.reason = "no reporting data".into();
                    }
                } else {
                    let s = mv::savings(&fit, &rep);
                    o.baseline_kwh = Some(s.adjusted_baseline_kwh);
                    o.avoided_kwh = Some(s.avoided_kwh);
                    o.avoided_cost = Some(s.avoided_cost);
                    o.fractional_savings = Some(s.fractional);
                    o.fsu_68 = s.fsu68;
                    o.fsu_90 = s.fsu90;
                    let (verdict, why) = mv::verdict(&fit, &s, &v.limits);
                    o.reason = why.join("; ");
                    if is_final {
                        o.verdict = verdict.into();
                    }
                }
            }
        }
        o
    }
}
