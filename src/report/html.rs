//! The page: one HTML string with inline CSS and inline SVG charts, no
//! scripts and no external references, readable on screen and on paper.
//!
//! Every string that came from the lake goes through [`fmt::esc`]. A chart
//! that cannot be drawn (odd data) becomes a visible note instead of failing
//! the whole report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::style::RGBColor;

use super::charts::{self, OwnerRow, OWNER_GROUPS};
use super::fmt::{self, esc};
use super::lake::{ActionView, BillView, BucketView, OutcomeView};

/// Everything the report is made of: latest revisions only.
pub(crate) struct Data {
    pub actions: Vec<ActionView>,
    pub outcomes: Vec<OutcomeView>,
    pub buckets: BTreeMap<String, Vec<BucketView>>,
    pub billing: Vec<BillView>,
}

/// The rendered page and what the counters in [`super::Report`] need.
pub(crate) struct Page {
    pub html: String,
    pub charts: usize,
    pub verified: usize,
}

/// Action statuses in lifecycle order, with their chart colours.
const STATUSES: [(&str, RGBColor); 8] = [
    ("open", charts::OPEN),
    ("acknowledged", charts::ACKNOWLEDGED),
    ("done", charts::DONE),
    ("verified", charts::VERIFIED),
    ("not_verified", charts::NOT_VERIFIED),
    ("rejected", charts::REJECTED),
    ("withdrawn", charts::WITHDRAWN),
    ("expired", charts::EXPIRED),
];

const STYLE: &str = r#"
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --soft: #f9fafb; }
* { box-sizing: border-box; }
body { margin: 0 auto; padding: 24px 28px 40px; max-width: 1180px; color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 6px; }
header .meta { color: var(--muted); margin: 0; }
header .meta span + span::before { content: "· "; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
  white-space: pre-wrap; word-break: break-word; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; margin: 20px 0 8px; }
.kpi { border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; background: var(--soft); }
.kpi .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.kpi .value { font-size: 22px; font-weight: 600; margin-top: 2px; }
.kpi .sub { color: var(--muted); font-size: 12px; }
figure.chart { margin: 12px 0 18px; }
figure.chart svg { display: block; max-width: 100%; height: auto; }
figure.chart svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.when { white-space: nowrap; }
td.evidence { color: var(--muted); font-size: 12px; max-width: 320px; word-break: break-word; }
.badge { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px; white-space: nowrap;
  background: #f3f4f6; color: #374151; }
.s-open, .s-acknowledged, .s-high { background: #fef3c7; color: #92400e; }
.s-done { background: #dbeafe; color: #1e40af; }
.s-verified { background: #dcfce7; color: #166534; }
.s-not_verified { background: #fee2e2; color: #991b1b; }
.s-medium { background: #ffedd5; color: #9a3412; }
.stats { margin: 4px 0; }
.stats > span { white-space: nowrap; }
.stats > span.reason { white-space: normal; }
.stats > span + span::before { content: "· "; color: var(--muted); }
.note { color: var(--muted); font-style: italic; }
footer { margin-top: 36px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--line); padding-top: 10px; }
@media print {
  body { padding: 0; max-width: none; font-size: 11px; }
  .kpi, pre, th { background: none; }
  figure.chart, .kpi, tr, section.outcome { break-inside: avoid; }
  h2 { break-after: avoid; }
}
"#;

/// Renders the whole page. `lake` is shown as given (the caller resolves it).
pub(crate) fn render(lake: &Path, d: &Data, generated_at_ms: i64) -> Page {
    let mut page = Page {
        html: String::with_capacity(64 * 1024),
        charts: 0,
        verified: d.actions.iter().filter(|a| a.status == "verified").count(),
    };
    let out = &mut page.html;
    out.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str("<title>plantflow report</title>\n<style>");
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n");

    header(out, lake, d, generated_at_ms);
    kpis(out, d);

    out.push_str("<h2>Value at stake</h2>\n");
    if d.actions.is_empty() {
        out.push_str(
            "<p class=\"note\">No actions in this lake yet: no rule has produced a finding.</p>\n",
        );
    } else {
        owner_section(out, d, &mut page.charts);
        status_section(out, d, &mut page.charts);
        actions_table(out, d);
    }

    out.push_str("<h2>Verified outcomes</h2>\n");
    outcomes_section(out, d, &mut page.charts);

    if !d.billing.is_empty() {
        billing_table(out, d);
    }

    footer(out, lake);
    out.push_str("</body>\n</html>\n");
    page
}

fn header(out: &mut String, lake: &Path, d: &Data, generated_at_ms: i64) {
    let mut flows: Vec<&str> = d
        .actions
        .iter()
        .map(|a| a.dataflow.as_str())
        .chain(d.outcomes.iter().map(|o| o.dataflow.as_str()))
        .filter(|f| !f.is_empty())
        .collect();
    flows.sort_unstable();
    flows.dedup();
    let flows = if flows.is_empty() {
        "no dataflow yet".to_string()
    } else {
        esc(&flows.join(", "))
    };
    let start = d.actions.iter().map(|a| a.period_start).min();
    let end = d.actions.iter().map(|a| a.period_end).max();
    let span = match (start, end) {
        (Some(s), Some(e)) => format!("{} – {} UTC", fmt::minute(s), fmt::minute(e)),
        _ => "no actions yet".into(),
    };
    let _ = write!(
        out,
        "<header>\n<h1>plantflow report</h1>\n<p class=\"meta\"><span>Dataflow: <strong>{flows}</strong></span> \
         <span>Actions span {span}</span> <span>Generated {}</span> \
         <span>Lake <code>{}</code></span></p>\n</header>\n",
        fmt::time(generated_at_ms, "%Y-%m-%d %H:%M:%S UTC"),
        esc(&lake.display().to_string()),
    );
}

/// Sums per currency (an empty currency counts as its own).
fn by_currency<'a>(items: impl Iterator<Item = (f64, &'a str)>) -> BTreeMap<&'a str, f64> {
    let mut m = BTreeMap::new();
    for (v, c) in items {
        if v.is_finite() {
            *m.entry(c).or_insert(0.0) += v;
        }
    }
    m
}

/// `1,250.75 EUR` (or `… EUR + … USD`); nothing to sum → zero in `fallback`.
fn money_sum(sums: &BTreeMap<&str, f64>, fallback: &str) -> String {
    if sums.is_empty() {
        return fmt::money(0.0, fallback);
    }
    sums.iter()
        .map(|(c, v)| fmt::money(*v, c))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The currency most actions use (for zero sums and axis labels).
fn main_currency(d: &Data) -> String {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &d.actions {
        *n.entry(a.currency.as_str()).or_insert(0) += 1;
    }
    n.into_iter()
        .max_by_key(|(_, k)| *k)
        .map(|(c, _)| c.to_string())
        .unwrap_or_default()
}

fn is_at_stake(status: &str) -> bool {
    matches!(status, "open" | "acknowledged")
}

fn kpis(out: &mut String, d: &Data) {
    let currency = main_currency(d);
    let at_stake: Vec<&ActionView> = d
        .actions
        .iter()
        .filter(|a| is_at_stake(&a.status))
        .collect();
    let stake = money_sum(
        &by_currency(at_stake.iter().map(|a| (a.value, a.currency.as_str()))),
        &currency,
    );
    let verified_actions = d.actions.iter().filter(|a| a.status == "verified").count();
    let done = d.actions.iter().filter(|a| a.status == "done").count();
    let verified: Vec<&OutcomeView> = d
        .outcomes
        .iter()
        .filter(|o| o.verdict == "verified")
        .collect();
    let kwh: f64 = verified
        .iter()
        .filter_map(|o| o.avoided_kwh)
        .filter(|v| v.is_finite())
        .sum();
    let cost = money_sum(
        &by_currency(
            verified
                .iter()
                .filter_map(|o| o.avoided_cost.map(|c| (c, o.currency.as_str()))),
        ),
        &currency,
    );
    let closed = d
        .actions
        .iter()
        .filter(|a| matches!(a.status.as_str(), "rejected" | "withdrawn" | "expired"))
        .count();
    let n_stake = at_stake.len();
    out.push_str("<section class=\"kpis\">\n");
    card(
        out,
        "Actions",
        &d.actions.len().to_string(),
        &format!("{n_stake} open or acknowledged · {closed} rejected, withdrawn or expired"),
    );
    card(
        out,
        "Value at stake",
        &stake,
        &format!("sum of value over the {n_stake} open or acknowledged actions"),
    );
    card(
        out,
        "Verified actions",
        &verified_actions.to_string(),
        &format!("{done} done, waiting for verification"),
    );
    card(
        out,
        "Verified avoided energy",
        &format!("{} kWh", fmt::num(kwh, 1)),
        &format!("{cost} avoided cost · {} verified outcomes", verified.len()),
    );
    out.push_str("</section>\n");
}

/// One KPI card; `value` and `sub` are HTML already.
fn card(out: &mut String, label: &str, value: &str, sub: &str) {
    let _ = writeln!(
        out,
        "<div class=\"kpi\"><div class=\"label\">{label}</div><div class=\"value\">{value}</div>\
         <div class=\"sub\">{sub}</div></div>"
    );
}

/// Wraps an SVG (or the reason it is missing) in a `<figure>` and counts it.
fn figure(
    out: &mut String,
    kind: &str,
    attrs: &str,
    label: &str,
    svg: Result<String, String>,
    caption: &str,
    charts: &mut usize,
) {
    match svg {
        Ok(svg) => {
            let svg = svg.replacen(
                "<svg ",
                &format!("<svg role=\"img\" aria-label=\"{}\" ", esc(label)),
                1,
            );
            let _ = write!(
                out,
                "<figure class=\"chart\" data-chart=\"{kind}\"{attrs}>\n{svg}<figcaption>{caption}</figcaption>\n</figure>\n"
            );
            *charts += 1;
        }
        Err(e) => {
            let _ = writeln!(out, "<p class=\"note\">Chart not drawn: {}</p>", esc(&e));
        }
    }
}

fn owner_section(out: &mut String, d: &Data, charts: &mut usize) {
    let mut owners: BTreeMap<&str, [f64; 4]> = BTreeMap::new();
    for a in &d.actions {
        let group = match a.status.as_str() {
            "open" | "acknowledged" => 0,
            "done" => 1,
            "verified" => 2,
            "not_verified" => 3,
            _ => continue,
        };
        let v = if a.value.is_finite() { a.value } else { 0.0 };
        owners.entry(a.owner.as_str()).or_insert([0.0; 4])[group] += v;
    }
    let mut rows: Vec<OwnerRow> = owners
        .into_iter()
        .map(|(o, by_group)| OwnerRow {
            owner: if o.is_empty() {
                "(no owner)".into()
            } else {
                o.to_string()
            },
            by_group,
        })
        .collect();
    let total = |r: &OwnerRow| r.by_group.iter().sum::<f64>();
    rows.sort_by(|a, b| {
        total(b)
            .total_cmp(&total(a))
            .then_with(|| a.owner.cmp(&b.owner))
    });
    if rows.is_empty() {
        out.push_str(
            "<p class=\"note\">Every action is rejected or withdrawn: nothing at stake.</p>\n",
        );
        return;
    }
    let mut currencies: Vec<&str> = d
        .actions
        .iter()
        .map(|a| a.currency.as_str())
        .filter(|c| !c.is_empty())
        .collect();
    currencies.sort_unstable();
    currencies.dedup();
    let desc = match currencies.as_slice() {
        [] => "value at stake".to_string(),
        [c] => format!("value at stake ({c})"),
        many => format!("value at stake ({}, not converted)", many.join(", ")),
    };
    let groups = OWNER_GROUPS.map(|g| g.0).join(", ");
    figure(
        out,
        "value-by-owner",
        "",
        "Value at stake by owner",
        charts::owner_chart(&rows, &desc),
        &format!(
            "<strong>Value at stake by owner</strong>, stacked by status ({groups}); \
             rejected and withdrawn actions are left out."
        ),
        charts,
    );
}

fn status_section(out: &mut String, d: &Data, charts: &mut usize) {
    let mut counts: Vec<(String, usize, f64, RGBColor)> = STATUSES
        .iter()
        .map(|(s, c)| (s.to_string(), 0, 0.0, *c))
        .collect();
    for a in &d.actions {
        let i = match counts.iter().position(|c| c.0 == a.status) {
            Some(i) => i,
            None => {
                counts.push((a.status.clone(), 0, 0.0, charts::REJECTED));
                counts.len() - 1
            }
        };
        counts[i].1 += 1;
        if a.value.is_finite() {
            counts[i].2 += a.value;
        }
    }
    let bars: Vec<(String, usize, RGBColor)> = counts
        .iter()
        .map(|(s, n, _, c)| (fmt::human(s), *n, *c))
        .collect();
    out.push_str("<h3>Actions by status</h3>\n");
    figure(
        out,
        "actions-by-status",
        "",
        "Actions by status",
        charts::status_chart(&bars),
        "<strong>Actions by status</strong>: the latest revision of every action.",
        charts,
    );
    let currency = main_currency(d);
    out.push_str(
        "<table class=\"counts\">\n<thead><tr><th>Status</th><th class=\"num\">Actions</th>\
         <th class=\"num\">Value</th></tr></thead>\n<tbody>\n",
    );
    for (s, n, v, _) in &counts {
        let _ = writeln!(
            out,
            "<tr><td><span class=\"badge s-{}\">{}</span></td><td class=\"num\">{n}</td><td class=\"num\">{}</td></tr>",
            class(s),
            esc(&fmt::human(s)),
            fmt::money(*v, &currency),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

/// A CSS class fragment from lake text: only `[a-z0-9_-]` survive.
fn class(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn actions_table(out: &mut String, d: &Data) {
    let _ = writeln!(out, "<h3>All actions ({})</h3>", d.actions.len());
    out.push_str(
        "<table class=\"actions\">\n<thead><tr><th>Owner</th><th>Type</th><th>Rule</th>\
         <th>Site / line / asset</th><th class=\"num\">Value</th><th>Severity</th><th>Status</th>\
         <th>First finding</th><th class=\"num\">Findings</th><th>Evidence (latest measures)</th></tr></thead>\n<tbody>\n",
    );
    for a in &d.actions {
        let place: Vec<&str> = [a.site.as_str(), a.line.as_str(), a.asset.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let _ = writeln!(
            out,
            "<tr id=\"action-{id}\"><td>{owner}</td><td>{kind}</td><td>{rule}</td><td>{place}</td>\
             <td class=\"num\">{value}</td><td><span class=\"badge s-{sev_class}\">{sev}</span></td>\
             <td><span class=\"badge s-{status_class}\" title=\"{note}\">{status}</span></td>\
             <td class=\"when\">{start}</td><td class=\"num\">{findings}</td><td class=\"evidence\">{evidence}</td></tr>",
            id = esc(&a.action_id),
            owner = esc(&a.owner),
            kind = esc(&fmt::human(&a.action_type)),
            rule = esc(&a.rule),
            place = esc(&place.join(" / ")),
            value = fmt::money(a.value, &a.currency),
            sev_class = class(&a.severity),
            sev = esc(&a.severity),
            status_class = class(&a.status),
            note = esc(&a.status_note),
            status = esc(&fmt::human(&a.status)),
            start = fmt::minute(a.period_start),
            findings = a.findings,
            evidence = fmt::evidence_summary(&a.evidence),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn verdict_rank(v: &str) -> u8 {
    match v {
        "verified" => 0,
        "not_verified" => 1,
        "insufficient_data" => 2,
        "pending" => 3,
        _ => 4,
    }
}

fn outcomes_section(out: &mut String, d: &Data, charts: &mut usize) {
    if d.outcomes.is_empty() {
        out.push_str(
            "<p class=\"note\">No verification outcomes yet: no action with a <code>[rules.verify]</code> \
             section has been marked done, or its reporting period has not started.</p>\n",
        );
        return;
    }
    let mut outcomes: Vec<&OutcomeView> = d.outcomes.iter().collect();
    outcomes.sort_by(|a, b| {
        verdict_rank(&a.verdict)
            .cmp(&verdict_rank(&b.verdict))
            .then_with(|| a.asset.cmp(&b.asset))
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.action_id.cmp(&b.action_id))
    });
    out.push_str(
        "<table class=\"outcomes\">\n<thead><tr><th>Asset</th><th>Rule</th><th>Verdict</th>\
         <th>Reporting period</th><th class=\"num\">Avoided kWh</th><th class=\"num\">Avoided cost</th>\
         <th class=\"num\">F</th><th class=\"num\">FSU68</th><th>Reason</th></tr></thead>\n<tbody>\n",
    );
    for o in &outcomes {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td><span class=\"badge s-{}\">{}</span>{}</td><td>{} – {}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&o.asset),
            esc(&o.rule),
            class(&o.verdict),
            esc(&fmt::human(&o.verdict)),
            if o.is_final { "" } else { " <small>(provisional)</small>" },
            fmt::minute(o.reporting_start),
            fmt::minute(o.reporting_end),
            fmt::opt_num(o.avoided_kwh, 1),
            o.avoided_cost
                .map(|c| fmt::money(c, &o.currency))
                .unwrap_or_else(|| "–".into()),
            fmt::pct(o.fractional_savings),
            fmt::pct(o.fsu_68),
            esc(&o.reason),
        );
    }
    out.push_str("</tbody>\n</table>\n");

    let mut charted = 0;
    for o in &outcomes {
        let Some(buckets) = d.buckets.get(&o.action_id).filter(|b| !b.is_empty()) else {
            continue;
        };
        charted += 1;
        outcome(out, o, buckets, charts);
    }
    if charted == 0 {
        out.push_str(
            "<p class=\"note\">No outcome has its series yet (<code>outcome_buckets</code> is written \
             when a reporting period closes).</p>\n",
        );
    }
}

fn outcome(out: &mut String, o: &OutcomeView, buckets: &[BucketView], charts: &mut usize) {
    let _ = writeln!(
        out,
        "<section class=\"outcome\" id=\"outcome-{}\">\n<h3>{} · {}</h3>",
        esc(&o.action_id),
        esc(&o.asset),
        esc(&o.rule),
    );
    let kwh = |v: Option<f64>| match v {
        Some(v) => format!("{} kWh", fmt::num(v, 1)),
        None => "–".into(),
    };
    let stats = [
        format!(
            "model <code>{}</code>",
            esc(if o.model.is_empty() { "–" } else { &o.model })
        ),
        format!("R² {}", fmt::opt_num(o.r2, 3)),
        format!("CV(RMSE) {}", fmt::pct(o.cv_rmse)),
        format!("NMBE {}", fmt::pct(o.nmbe)),
        format!("baseline {}", kwh(o.baseline_kwh)),
        format!("actual {}", kwh(Some(o.actual_kwh))),
        format!("avoided {}", kwh(o.avoided_kwh)),
        format!(
            "avoided cost {}",
            o.avoided_cost
                .map(|c| fmt::money(c, &o.currency))
                .unwrap_or_else(|| "–".into())
        ),
        format!("F {}", fmt::pct(o.fractional_savings)),
        format!("FSU68 {}", fmt::pct(o.fsu_68)),
        format!("FSU90 {}", fmt::pct(o.fsu_90)),
    ];
    out.push_str("<p class=\"stats\">");
    for s in &stats {
        let _ = write!(out, "<span>{s}</span> ");
    }
    out.push_str("</p>\n");
    let _ = writeln!(
        out,
        "<p class=\"stats\"><span>verdict <span class=\"badge s-{}\">{}</span></span>{} \
         <span>baseline {} – {} ({} buckets)</span> <span>reporting {} – {} ({} buckets)</span></p>",
        class(&o.verdict),
        esc(&fmt::human(&o.verdict)),
        if o.reason.is_empty() {
            String::new()
        } else {
            format!(" <span class=\"reason\">{}</span>", esc(&o.reason))
        },
        fmt::minute(o.baseline_start),
        fmt::minute(o.baseline_end),
        o.n_baseline,
        fmt::minute(o.reporting_start),
        fmt::minute(o.reporting_end),
        o.n_reporting,
    );
    let caption = format!(
        "<strong>{}: energy before and after, with the baseline model</strong> ({}). \
         Measured energy per bucket in the baseline and reporting periods, the baseline model's \
         prediction (dashed), the gap between the periods when the problem was found and fixed \
         (shaded), and the avoided energy between prediction and measurement. Revision {} of the outcome.",
        esc(&o.asset),
        esc(&o.rule),
        buckets.first().map(|b| b.revision).unwrap_or(o.revision),
    );
    figure(
        out,
        "outcome",
        &format!(
            " data-action=\"{}\" data-buckets=\"{}\"",
            esc(&o.action_id),
            buckets.len()
        ),
        &format!("{}: energy before and after", o.asset),
        charts::outcome_chart(o, buckets),
        &caption,
        charts,
    );
    out.push_str("</section>\n");
}

fn billing_table(out: &mut String, d: &Data) {
    out.push_str("<h2>Billing</h2>\n");
    out.push_str(
        "<table class=\"billing\">\n<thead><tr><th>Site</th><th>Period</th><th class=\"num\">Energy kWh</th>\
         <th class=\"num\">Energy cost</th><th class=\"num\">Peak kW</th><th class=\"num\">Demand cost</th>\
         <th class=\"num\">Total cost</th><th class=\"num\">Peak shave kW</th><th class=\"num\">Peak shave value</th>\
         <th>Final</th></tr></thead>\n<tbody>\n",
    );
    for b in &d.billing {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{} – {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&b.site),
            fmt::time(b.period_start, "%Y-%m-%d"),
            fmt::time(b.period_end, "%Y-%m-%d"),
            fmt::num(b.energy_kwh, 1),
            fmt::money(b.energy_cost, &b.currency),
            fmt::num(b.peak_kw, 1),
            fmt::money(b.demand_cost, &b.currency),
            fmt::money(b.total_cost, &b.currency),
            fmt::num(b.peak_shave_kw, 1),
            fmt::money(b.peak_shave_value, &b.currency),
            if b.is_final { "yes" } else { "running" },
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn footer(out: &mut String, lake: &Path) {
    // A single quote in the path would end the SQL string literal.
    let root = lake.display().to_string().replace('\'', "''");
    let actions = format!(
        "WITH latest AS (\n  SELECT * FROM read_parquet('{root}/actions/**/*.parquet', hive_partitioning = true)\n  \
         QUALIFY revision = max(revision) OVER (PARTITION BY action_id))\n\
         SELECT owner, status, count(*) AS actions, sum(value) AS value\n\
         FROM latest\nGROUP BY ALL\nORDER BY value DESC;"
    );
    let outcomes = format!(
        "WITH latest AS (\n  SELECT * FROM read_parquet('{root}/outcomes/**/*.parquet', hive_partitioning = true)\n  \
         QUALIFY revision = max(revision) OVER (PARTITION BY action_id))\n\
         SELECT verdict, count(*) AS outcomes, sum(avoided_kwh) AS avoided_kwh, sum(avoided_cost) AS avoided_cost\n\
         FROM latest\nGROUP BY ALL;"
    );
    let _ = write!(
        out,
        "<footer>\n<p>Every table in the lake keeps all revisions of a key; the highest <code>revision</code> \
         is the truth. Query it with DuckDB (<code>duckdb</code>, then paste), filtering to the latest \
         revision first and aggregating after:</p>\n<pre>{}</pre>\n<pre>{}</pre>\n\
         <p>This page is self-contained: no scripts, fonts or images are loaded from anywhere.</p>\n</footer>\n",
        esc(&actions),
        esc(&outcomes),
    );
}
