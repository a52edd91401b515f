//! `plantflow backtest`: what a dataflow's rules would have found over
//! history, and what it is worth, without a lake to keep.
//!
//! The dataflow runs as `run` runs it (the same engine, at full speed) over
//! the replay files of `--input` (its `${INPUT_DIR}`), into a scratch lake
//! that is deleted afterwards, with its state; its other sinks (MQTT,
//! files, webhooks) and its operator surface are left out, so trying a rule
//! never reaches a work-order system or a running node's state directory. The actions it found (the latest revision of each)
//! are summed by owner and type, by month, and by group, with the findings
//! suppressed by maintenance windows and cool-downs; `--baseline` runs a
//! second version of the dataflow over the same input and tells the actions
//! added, removed and changed in value (actions match by `action_id`: the
//! rule, the group and the period). The page (HTML) has the same and a
//! chart of value found per month.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::charts::{owner_chart, OwnerRow};
use super::fmt::{esc, evidence_summary, money, time};
use super::lake::{latest_actions, ActionView};
use crate::dataflow::SourcePlan;
use crate::run::{RunError, RunOptions};

/// What `plantflow backtest` was asked.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub dataflow: PathBuf,
    pub input: PathBuf,
    pub rule: Option<String>,
    pub baseline: Option<PathBuf>,
    pub workers: usize,
}

/// What one dataflow found over the input.
#[derive(Clone, Debug)]
pub struct Found {
    pub dataflow: PathBuf,
    /// The latest revision of every action (of `--rule`, if given).
    pub actions: Vec<ActionView>,
    pub rows: u64,
    pub suppressed_maintenance: u64,
    pub suppressed_cooldown: u64,
    pub currency: String,
    pub seconds: f64,
}

impl Found {
    fn value(&self) -> f64 {
        self.actions.iter().map(|a| finite(a.value)).sum()
    }
}

fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// How a second version of the dataflow differs: actions only it found
/// (removed), only this one found (added), and both found with another value.
#[derive(Clone, Debug, Default)]
pub struct Diff {
    pub added: Vec<ActionView>,
    pub removed: Vec<ActionView>,
    /// (this version's action, the baseline's value)
    pub changed: Vec<(ActionView, f64)>,
}

/// Compares `now` with `before` by `action_id`.
pub fn diff(now: &[ActionView], before: &[ActionView]) -> Diff {
    let by_id = |v: &[ActionView]| -> BTreeMap<String, ActionView> {
        v.iter().map(|a| (a.action_id.clone(), a.clone())).collect()
    };
    let (now, before) = (by_id(now), by_id(before));
    let mut d = Diff::default();
    for (id, a) in &now {
        match before.get(id) {
            None => d.added.push(a.clone()),
            Some(b) if (finite(b.value) - finite(a.value)).abs() > 1e-9 => {
                d.changed.push((a.clone(), finite(b.value)))
            }
            Some(_) => {}
        }
    }
    d.removed = before
        .iter()
        .filter(|(id, _)| !now.contains_key(*id))
        .map(|(_, b)| b.clone())
        .collect();
    d
}

/// A scratch directory, deleted when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> Scratch {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Scratch(std::env::temp_dir().join(format!("plantflow-backtest-{}-{n}", std::process::id())))
}

/// Runs `file` over `input` into a scratch lake and reads what it found.
pub fn find(
    file: &Path,
    input: &Path,
    rule: Option<&str>,
    workers: usize,
) -> Result<Found, RunError> {
    let dir = scratch();
    let (i, o) = (input.display().to_string(), dir.0.display().to_string());
    let env = move |k: &str| match k {
        "INPUT_DIR" => Some(i.clone()),
        "OUT_DIR" => Some(o.clone()),
        _ => std::env::var(k).ok(),
    };
    let mut df = crate::dataflow::load_with_env(file, &env).map_err(|e| RunError {
        code: crate::EXIT_CONFIG as u8,
        message: e.render(),
    })?;
    let config = |message: String| RunError {
        code: crate::EXIT_CONFIG as u8,
        message,
    };
    if let Some(i) = df
        .sources
        .iter()
        .position(|s| !matches!(s, SourcePlan::Replay(_)))
    {
        return Err(config(format!(
            "{}: sources[{i}] is not a replay source; a backtest replays history files",
            file.display()
        )));
    }
    if let Some(r) = rule {
        if !df.rules.iter().any(|p| p.id == r) {
            let ids: Vec<&str> = df.rules.iter().map(|p| p.id.as_str()).collect();
            return Err(config(format!(
                "{}: no rule `{r}` (its rules: {})",
                file.display(),
                ids.join(", ")
            )));
        }
    }
    // Nothing leaves the node: no publishing, files, webhooks or surface.
    df.publish.clear();
    df.jsonl.clear();
    df.webhooks.clear();
    df.plan.http = None;
    // Nor does its state: a node's own state directory stays untouched.
    df.plan.window.state_dir = None;
    let lake = dir.0.join("lake");
    df.sink.path = lake.clone();
    let currency = df.currency.clone();
    let started = std::time::Instant::now();
    let summary = crate::run::run(
        df,
        RunOptions {
            workers: workers.max(1),
            ..Default::default()
        },
    )?;
    let mut actions = latest_actions(&lake)?;
    if let Some(r) = rule {
        actions.retain(|a| a.rule == r);
    }
    actions.sort_by(|a, b| (a.period_start, &a.action_id).cmp(&(b.period_start, &b.action_id)));
    Ok(Found {
        dataflow: file.to_path_buf(),
        actions,
        rows: summary.rows_read,
        suppressed_maintenance: summary.suppressed_maintenance,
        suppressed_cooldown: summary.suppressed_cooldown,
        currency,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A backtest's results.
pub struct Backtest {
    pub found: Found,
    pub baseline: Option<(Found, Diff)>,
}

/// Runs the backtest (and its baseline).
pub fn run(o: &Options) -> Result<Backtest, RunError> {
    let rule = o.rule.as_deref();
    let found = find(&o.dataflow, &o.input, rule, o.workers)?;
    let baseline = match &o.baseline {
        Some(b) => {
            let before = find(b, &o.input, rule, o.workers)?;
            let d = diff(&found.actions, &before.actions);
            Some((before, d))
        }
        None => None,
    };
    Ok(Backtest { found, baseline })
}

/// Sums of value and counts by a key, largest value first.
fn by<K: Ord + Clone>(
    actions: &[ActionView],
    key: impl Fn(&ActionView) -> K,
) -> Vec<(K, usize, f64)> {
    let mut m: BTreeMap<K, (usize, f64)> = BTreeMap::new();
    for a in actions {
        let e = m.entry(key(a)).or_default();
        e.0 += 1;
        e.1 += finite(a.value);
    }
    let mut v: Vec<(K, usize, f64)> = m.into_iter().map(|(k, (n, x))| (k, n, x)).collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2));
    v
}

fn month(a: &ActionView) -> String {
    time(a.period_start, "%Y-%m")
}

/// An action's group: its most specific place (asset names carry their
/// line and site) and rule.
fn group(a: &ActionView) -> String {
    let place = [&a.asset, &a.line, &a.site]
        .into_iter()
        .find(|p| !p.is_empty())
        .map_or("(plant)", |p| p.as_str());
    format!("{place} ({})", a.rule)
}

/// A signed amount, `+0.00` for nothing.
fn signed(x: f64) -> String {
    format!("{:+14.2}", if x == 0.0 { 0.0 } else { x })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl Backtest {
    /// The text `plantflow backtest` prints.
    pub fn text(&self) -> String {
        let f = &self.found;
        let cur = f.currency.as_str();
        let mut out = String::new();
        let n = f.actions.len();
        let _ = writeln!(
            out,
            "backtest  {}: {} rows in {:.1} s\nfound     {n} action{}, {} at stake",
            f.dataflow.display(),
            f.rows,
            f.seconds,
            plural(n),
            money(f.value(), cur)
        );
        let _ = writeln!(out, "\nby owner and action type");
        for ((owner, kind), n, v) in by(&f.actions, |a| (a.owner.clone(), a.action_type.clone())) {
            let _ = writeln!(
                out,
                "  {owner:<16} {kind:<24} {n:>5} action{:<1} {:>14}",
                plural(n),
                money(v, cur)
            );
        }
        let _ = writeln!(out, "\nvalue at stake per month (UTC, by period start)");
        let mut months = by(&f.actions, month);
        months.sort_by(|a, b| a.0.cmp(&b.0));
        for (m, n, v) in months {
            let _ = writeln!(
                out,
                "  {m}  {n:>5} action{:<1} {:>14}",
                plural(n),
                money(v, cur)
            );
        }
        let _ = writeln!(out, "\ntop groups");
        for (g, n, v) in by(&f.actions, group).into_iter().take(10) {
            let evidence = f
                .actions
                .iter()
                .filter(|a| group(a) == g)
                .max_by(|a, b| finite(a.value).total_cmp(&finite(b.value)))
                .map(|a| evidence_summary(&a.evidence))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {g:<44} {n:>4} action{:<1} {:>12}  {evidence}",
                plural(n),
                money(v, cur)
            );
        }
        let _ = writeln!(
            out,
            "\nsuppressed findings: {} in a maintenance window, {} in a rule's cool-down",
            f.suppressed_maintenance, f.suppressed_cooldown
        );
        if let Some((b, d)) = &self.baseline {
            let _ = writeln!(
                out,
                "\nagainst {}: {} action{}, {} at stake",
                b.dataflow.display(),
                b.actions.len(),
                plural(b.actions.len()),
                money(b.value(), cur)
            );
            let line = |a: &ActionView| {
                format!(
                    "{} {} {}",
                    time(a.period_start, "%Y-%m-%d %H:%M"),
                    group(a),
                    money(finite(a.value), cur)
                )
            };
            let sum = |v: &[ActionView]| v.iter().map(|a| finite(a.value)).sum::<f64>();
            let _ = writeln!(
                out,
                "  added    {:>4}  {}",
                d.added.len(),
                signed(sum(&d.added))
            );
            for a in d.added.iter().take(10) {
                let _ = writeln!(out, "           + {}", line(a));
            }
            let _ = writeln!(
                out,
                "  removed  {:>4}  {}",
                d.removed.len(),
                signed(-sum(&d.removed))
            );
            for a in d.removed.iter().take(10) {
                let _ = writeln!(out, "           - {}", line(a));
            }
            let changed: f64 = d.changed.iter().map(|(a, was)| finite(a.value) - was).sum();
            let _ = writeln!(
                out,
                "  changed  {:>4}  {}",
                d.changed.len(),
                signed(changed)
            );
            for (a, was) in d.changed.iter().take(10) {
                let _ = writeln!(out, "           ~ {} (was {})", line(a), money(*was, cur));
            }
            let _ = writeln!(
                out,
                "  net            {} {cur}",
                signed(f.value() - b.value())
            );
        }
        out
    }

    /// The page: the same tables and a chart of value found per month.
    pub fn html(&self) -> String {
        let f = &self.found;
        let cur = f.currency.as_str();
        let mut months = by(&f.actions, month);
        months.sort_by(|a, b| a.0.cmp(&b.0));
        let rows: Vec<OwnerRow> = months
            .iter()
            .map(|(m, _, _)| {
                let mut by_group = [0.0; 4];
                for a in f.actions.iter().filter(|a| &month(a) == m) {
                    let g = match a.status.as_str() {
                        "done" => 1,
                        "verified" => 2,
                        "not_verified" => 3,
                        _ => 0,
                    };
                    by_group[g] += finite(a.value);
                }
                OwnerRow {
                    owner: m.clone(),
                    by_group,
                }
            })
            .collect();
        let chart = owner_chart(&rows, &format!("value found ({cur})"))
            .unwrap_or_else(|e| format!("<p>Chart not drawn: {}</p>", esc(&e)));
        let mut table = String::from(
            "<table><tr><th>period</th><th>group</th><th>owner</th><th>type</th><th>status</th><th>value</th><th>evidence</th></tr>\n",
        );
        for a in &f.actions {
            let _ = writeln!(
                table,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&time(a.period_start, "%Y-%m-%d %H:%M")),
                esc(&group(a)),
                esc(&a.owner),
                esc(&a.action_type),
                esc(&a.status),
                esc(&money(finite(a.value), cur)),
                esc(&evidence_summary(&a.evidence))
            );
        }
        table.push_str("</table>\n");
        format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>plantflow backtest</title>\
             <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}\
             table{{border-collapse:collapse;font-size:13px}}td,th{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}\
             pre{{background:#f6f6f6;padding:1em}}</style></head><body>\n\
             <h1>Backtest of {}</h1>\n<h2>Value found per month</h2>\n<figure class=\"chart\">{chart}</figure>\n\
             <h2>Summary</h2>\n<pre>{}</pre>\n<h2>Actions</h2>\n{table}</body></html>\n",
            esc(&f.dataflow.display().to_string()),
            esc(&self.text())
        )
    }

    /// The actions as JSON lines (`--json`): one object per action.
    pub fn json(&self) -> String {
        let one = |a: &ActionView| {
            serde_json::json!({
                "action_id": a.action_id, "rule": a.rule, "site": a.site, "line": a.line,
                "asset": a.asset, "owner": a.owner, "action_type": a.action_type,
                "value": a.value, "status": a.status, "period_start": a.period_start,
                "revision": a.revision,
            })
        };
        let mut v = serde_json::json!({
            "dataflow": self.found.dataflow,
            "rows": self.found.rows,
            "value": self.found.value(),
            "suppressed_maintenance": self.found.suppressed_maintenance,
            "suppressed_cooldown": self.found.suppressed_cooldown,
            "actions": self.found.actions.iter().map(one).collect::<Vec<_>>(),
        });
        if let Some((b, d)) = &self.baseline {
            v["baseline"] = serde_json::json!({
                "dataflow": b.dataflow,
                "value": b.value(),
                "added": d.added.iter().map(|a| &a.action_id).collect::<Vec<_>>(),
                "removed": d.removed.iter().map(|a| &a.action_id).collect::<Vec<_>>(),
                "changed": d.changed.iter().map(|(a, was)| serde_json::json!({"action_id": a.action_id, "value": a.value, "was": was})).collect::<Vec<_>>(),
            });
        }
        v.to_string() + "\n"
    }
}

/// `plantflow backtest`: runs, prints (text or `--json`), writes the page.
pub fn main(o: &Options, page: &Path, json: bool) -> std::process::ExitCode {
    match run(o) {
        Ok(b) => {
            if json {
                print!("{}", b.json());
            } else {
                print!("{}", b.text());
            }
            match std::fs::write(page, b.html()) {
                Ok(()) if !json => println!("\npage      {}", page.display()),
                Ok(()) => {}
                Err(e) => {
                    eprintln!("plantflow backtest: cannot write {}: {e}", page.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", e.message);
            std::process::ExitCode::from(e.code)
        }
    }
}
