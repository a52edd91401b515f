//! The report's charts: plotters' SVG backend drawing into a `String` that is
//! inlined in the page.
//!
//! plotters is built without its `ttf` feature, so there is no font engine:
//! the SVG backend writes every label as an SVG `<text>` element (the viewer
//! renders it with its own fonts) and layout uses a crude width estimate
//! (0.7 em per byte). That is enough for captions, tick labels and axis
//! descriptions, but it means text widths are approximate: label areas are
//! sized from the label lengths here, and legends are drawn in a strip beside
//! the plot instead of plotters' in-plot legend box, so they never cover data.
//! plotters' SVG `font-size` is the requested size divided by 1.24.
//!
//! Time axes use epoch milliseconds as `i64` coordinates (plotters' chrono
//! coordinates need its `datetime` feature) with tick positions computed here
//! on whole UTC hours/days and labels formatted with chrono.

use std::error::Error;

use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::RangedCoordi32;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::fmt;
use super::lake::{BucketView, OutcomeView};

type Drawn = Result<(), Box<dyn Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Width of every chart, in SVG user units (the page scales it down to fit).
const WIDTH: u32 = 760;
/// Width of the legend strip right of a plot.
const LEGEND_WIDTH: u32 = 210;
const FONT: &str = "sans-serif";
/// Tick labels and axis descriptions (≈ 11.3 px in the SVG).
const LABEL: f64 = 14.0;
/// Legend and in-plot annotations (≈ 10.5 px).
const SMALL: f64 = 13.0;
const TITLE: f64 = 17.0;

const INK: RGBColor = RGBColor(55, 65, 81);
const GRID: RGBColor = RGBColor(229, 231, 235);

pub(crate) const OPEN: RGBColor = RGBColor(217, 119, 6);
pub(crate) const ACKNOWLEDGED: RGBColor = RGBColor(245, 158, 11);
pub(crate) const DONE: RGBColor = RGBColor(37, 99, 235);
pub(crate) const VERIFIED: RGBColor = RGBColor(22, 163, 74);
pub(crate) const NOT_VERIFIED: RGBColor = RGBColor(220, 38, 38);
pub(crate) const REJECTED: RGBColor = RGBColor(107, 114, 128);
pub(crate) const WITHDRAWN: RGBColor = RGBColor(156, 163, 175);
pub(crate) const EXPIRED: RGBColor = RGBColor(209, 213, 219);

const BASELINE: RGBColor = RGBColor(37, 99, 235);
const REPORTING: RGBColor = RGBColor(22, 163, 74);
const PREDICTED: RGBColor = RGBColor(75, 85, 99);
const FIX_BAND: RGBColor = RGBColor(250, 204, 21);
const EXCESS: RGBColor = RGBColor(220, 38, 38);

/// The status groups of the value-by-owner chart, in stacking order.
pub(crate) const OWNER_GROUPS: [(&str, RGBColor); 4] = [
    ("open / acknowledged", OPEN),
    ("done", DONE),
    ("verified", VERIFIED),
    ("not verified", NOT_VERIFIED),
];

/// One owner's value at stake per [`OWNER_GROUPS`] entry.
pub(crate) struct OwnerRow {
    pub owner: String,
    pub by_group: [f64; 4],
}

/// What a legend entry shows beside its label.
enum Swatch {
    Bar(RGBColor),
    Line(RGBColor),
    Dashed(RGBColor),
    Fill(RGBColor, f64),
    Vertical(RGBColor),
}

fn text_style(size: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).color(&INK)
}

/// Renders into a fresh SVG string; errors name the chart.
fn render(height: u32, what: &str, draw: impl FnOnce(&Area) -> Drawn) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| format!("drawing the {what} chart: {e}"))?;
        draw(&root).map_err(|e| format!("drawing the {what} chart: {e}"))?;
        root.present()
            .map_err(|e| format!("drawing the {what} chart: {e}"))?;
    }
    Ok(svg)
}

/// Legend entries top-down in the strip `area`, starting at `top`.
fn legend(area: &Area, top: i32, entries: &[(Swatch, String)]) -> Drawn {
    let style = text_style(SMALL).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (swatch, label)) in entries.iter().enumerate() {
        let y = top + 22 * i as i32;
        match swatch {
            Swatch::Bar(c) => area.draw(&Rectangle::new([(8, y - 6), (28, y + 6)], c.filled()))?,
            Swatch::Line(c) => {
                area.draw(&PathElement::new(vec![(6, y), (30, y)], c.stroke_width(2)))?;
                area.draw(&Circle::new((18, y), 2, c.filled()))?;
            }
            Swatch::Dashed(c) => area.draw(&DashedPathElement::new(
                vec![(6, y), (30, y)],
                5,
                3,
                c.stroke_width(2),
            ))?,
            Swatch::Fill(c, alpha) => area.draw(&Rectangle::new(
                [(8, y - 7), (28, y + 7)],
                c.mix(*alpha).filled(),
            ))?,
            Swatch::Vertical(c) => area.draw(&PathElement::new(
                vec![(18, y - 8), (18, y + 8)],
                c.stroke_width(1),
            ))?,
        }
        area.draw(&Text::new(label.as_str(), (36, y), style.clone()))?;
    }
    Ok(())
}

/// Category axes are integers in hundredths of a slot: slot `i` is centred
/// on `i * SLOT`, a bar spans `± BAR`. (A float axis with custom key points
/// cannot be meshed: plotters only implements label formatting for
/// `WithKeyPoints` over coordinates with default formatting, which its
/// float coordinates do not have.)
const SLOT: i32 = 100;
const BAR: i32 = 32;

/// An axis of `n` categories with one tick (and label) per category.
fn category_axis(n: usize) -> WithKeyPoints<RangedCoordi32> {
    let n = n.max(1) as i32;
    (-SLOT / 2..n * SLOT - SLOT / 2).with_key_points((0..n).map(|i| i * SLOT).collect())
}

/// The category a tick value stands for, if any.
fn category(v: i32, n: usize) -> Option<usize> {
    let i = (v + SLOT / 2).div_euclid(SLOT);
    (v.rem_euclid(SLOT) == 0 && i >= 0 && (i as usize) < n).then_some(i as usize)
}

/// Decimals for axis labels of a value axis reaching `max`.
fn axis_decimals(max: f64) -> usize {
    if max >= 100.0 {
        0
    } else if max >= 1.0 {
        1
    } else {
        2
    }
}

/// "Value at stake by owner": one horizontal bar per owner (largest on top),
/// stacked by status group, total at the bar's end, legend at the right.
pub(crate) fn owner_chart(rows: &[OwnerRow], value_desc: &str) -> Result<String, String> {
    let n = rows.len();
    let height = (90 + 34 * n as u32).max(150);
    render(height, "value-by-owner", |root| {
        let (plot, side) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let positive = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        let totals: Vec<f64> = rows
            .iter()
            .map(|r| r.by_group.iter().map(|v| positive(*v)).sum())
            .collect();
        let max = totals.iter().copied().fold(0.0, f64::max);
        let x_max = if max > 0.0 { max * 1.22 } else { 1.0 };
        let longest = rows
            .iter()
            .map(|r| r.owner.chars().count())
            .max()
            .unwrap_or(0);
        let label_area = (longest as u32 * 7 + 16).clamp(60, 220);
        let mut chart = ChartBuilder::on(&plot)
            .margin(14)
            .x_label_area_size(46)
            .y_label_area_size(label_area)
            .build_cartesian_2d(0f64..x_max, category_axis(n))?;
        let decimals = axis_decimals(x_max);
        let x_fmt = |v: &f64| fmt::num(*v, decimals);
        // Row i is drawn at slot n-1-i so the largest owner is on top.
        let y_fmt = |v: &i32| match category(*v, n) {
            Some(slot) => rows[n - 1 - slot].owner.clone(),
            None => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(INK)
            .label_style(text_style(LABEL))
            .axis_desc_style(text_style(LABEL))
            .x_desc(value_desc)
            .x_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()?;
        let total_style = text_style(SMALL).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, row) in rows.iter().enumerate() {
            let y = ((n - 1 - i) as i32) * SLOT;
            let mut x = 0.0;
            for (g, (_, color)) in OWNER_GROUPS.iter().enumerate() {
                let v = positive(row.by_group[g]);
                if v == 0.0 {
                    continue;
                }
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x, y - BAR), (x + v, y + BAR)],
                    color.filled(),
                )))?;
                x += v;
            }
            chart.draw_series(std::iter::once(
                EmptyElement::at((x, y))
                    + Text::new(fmt::num(totals[i], 2), (6, 0), total_style.clone()),
            ))?;
        }
        let entries: Vec<(Swatch, String)> = OWNER_GROUPS
            .iter()
            .map(|(label, color)| (Swatch::Bar(*color), label.to_string()))
            .collect();
        legend(&side, 24, &entries)
    })
}

/// "Actions by status": one vertical bar per status with its count on top.
pub(crate) fn status_chart(counts: &[(String, usize, RGBColor)]) -> Result<String, String> {
    render(260, "actions-by-status", |root| {
        let n = counts.len().max(1);
        let max = counts.iter().map(|c| c.1).max().unwrap_or(0) as i64;
        let y_max = (max as f64 * 1.2).ceil() as i64 + 1;
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .x_label_area_size(34)
            .y_label_area_size(50)
            .build_cartesian_2d(category_axis(n), 0i64..y_max)?;
        let x_fmt = |v: &i32| match category(*v, counts.len()) {
            Some(i) => counts[i].0.clone(),
            None => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(INK)
            .label_style(text_style(LABEL))
            .axis_desc_style(text_style(LABEL))
            .y_desc("actions")
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .draw()?;
        let count_style = text_style(SMALL).pos(Pos::new(HPos::Center, VPos::Bottom));
        for (i, (_, count, color)) in counts.iter().enumerate() {
            let x = i as i32 * SLOT;
            let c = *count as i64;
            if c > 0 {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x - BAR, 0), (x + BAR, c)],
                    color.filled(),
                )))?;
            }
            chart.draw_series(std::iter::once(
                EmptyElement::at((x, c))
                    + Text::new(count.to_string(), (0, -4), count_style.clone()),
            ))?;
        }
        Ok(())
    })
}

/// Tick positions on whole UTC steps (at most `max_ticks`) and their chrono format.
fn time_ticks(x0: i64, x1: i64, max_ticks: i64) -> (Vec<i64>, &'static str) {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;
    const STEPS: [i64; 17] = [
        5 * MIN,
        15 * MIN,
        30 * MIN,
        HOUR,
        2 * HOUR,
        3 * HOUR,
        6 * HOUR,
        12 * HOUR,
        DAY,
        2 * DAY,
        7 * DAY,
        14 * DAY,
        28 * DAY,
        56 * DAY,
        91 * DAY,
        182 * DAY,
        364 * DAY,
    ];
    let span = x1.saturating_sub(x0).max(1);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / s < max_ticks)
        .unwrap_or(span / max_ticks.max(1) + 1);
    let format = if step < DAY {
        "%m-%d %H:%M"
    } else {
        "%Y-%m-%d"
    };
    let mut ticks = Vec::new();
    let mut t = x0.div_euclid(step).saturating_mul(step);
    if t < x0 {
        t = t.saturating_add(step);
    }
    while t <= x1 && ticks.len() < 64 {
        ticks.push(t);
        match t.checked_add(step) {
            Some(next) => t = next,
            None => break,
        }
    }
    (ticks, format)
}

/// Splits time-ordered points where consecutive points are further apart
/// than `max_gap`, so lines do not bridge missing buckets.
fn runs(points: &[(i64, f64)], max_gap: i64) -> Vec<Vec<(i64, f64)>> {
    let mut out: Vec<Vec<(i64, f64)>> = Vec::new();
    for &p in points {
        match out.last_mut() {
            Some(run)
                if run
                    .last()
                    .is_some_and(|q| p.0.saturating_sub(q.0) <= max_gap) =>
            {
                run.push(p)
            }
            _ => out.push(vec![p]),
        }
    }
    out
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// The bucket length (median of `bucket_end - bucket_start`), in ms.
pub(crate) fn bucket_length(buckets: &[BucketView]) -> Option<i64> {
    median(
        buckets
            .iter()
            .map(|b| b.bucket_end.saturating_sub(b.bucket_start))
            .filter(|d| *d > 0)
            .collect(),
    )
}

/// `per hour`, `per day`, … for the y axis.
fn per_bucket(length: Option<i64>) -> &'static str {
    match length {
        Some(3_600_000) => "kWh per hour",
        Some(86_400_000) => "kWh per day",
        Some(604_800_000) => "kWh per week",
        Some(900_000) => "kWh per 15 min",
        _ => "kWh per bucket",
    }
}

/// The before/after chart of one outcome: measured energy per bucket in the
/// baseline and reporting periods, the baseline model's prediction over both
/// (dashed), the found-and-fixed gap between the periods as a shaded band,
/// the reporting start as a vertical line, and the avoided (or excess)
/// energy as the area between prediction and measurement.
pub(crate) fn outcome_chart(o: &OutcomeView, buckets: &[BucketView]) -> Result<String, String> {
    let title = format!(
        "{}: energy before and after, with the baseline model",
        o.asset
    );
    render(380, "outcome", |root| {
        let frame = outcome_frame(buckets)?;
        let Frame {
            length,
            x0,
            x1,
            y_min,
            y_max,
            ..
        } = frame;

        let (plot, side) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let (ticks, tick_format) = time_ticks(x0, x1, 5);
        let mut chart = ChartBuilder::on(&plot)
            .caption(&title, text_style(TITLE))
            .margin(14)
            .x_label_area_size(46)
            .y_label_area_size(64)
            .build_cartesian_2d((x0..x1).with_key_points(ticks), y_min..y_max)?;
        let x_fmt = |t: &i64| fmt::time(*t, tick_format);
        let decimals = axis_decimals(y_max - y_min);
        let y_fmt = |v: &f64| fmt::num(*v, decimals);
        chart
            .configure_mesh()
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(INK)
            .label_style(text_style(LABEL))
            .axis_desc_style(text_style(LABEL))
            .x_desc("time (UTC)")
            .y_desc(per_bucket(length))
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()?;

        let mut entries: Vec<(Swatch, String)> = Vec::new();

        // The gap between the periods: the problem was found, then fixed.
        let (g0, g1) = (o.baseline_end.max(x0), o.reporting_start.min(x1));
        if g1 > g0 {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(g0, y_min), (g1, y_max)],
                FIX_BAND.mix(0.28).filled(),
            )))?;
            let px = |t: i64| chart.backend_coord(&(t, y_max)).0;
            if px(g1) - px(g0) >= 80 {
                let style = text_style(SMALL).pos(Pos::new(HPos::Center, VPos::Top));
                chart.draw_series(std::iter::once(
                    EmptyElement::at((g0 + (g1 - g0) / 2, y_max))
                        + Text::new("found & fixed", (0, 4), style),
                ))?;
            }
            entries.push((
                Swatch::Fill(FIX_BAND, 0.28),
                "found & fixed (between periods)".into(),
            ));
        }

        let series = |period: &str, f: fn(&BucketView) -> f64| frame.series(period, f);

        // Avoided (or excess) energy: between prediction and measurement, reporting period.
        let saving = o.avoided_kwh.unwrap_or(0.0) >= 0.0;
        let area_color = if saving { REPORTING } else { EXCESS };
        let mut area_drawn = false;
        for (pred, meas) in series("reporting", |b| b.predicted_kwh)
            .into_iter()
            .zip(series("reporting", |b| b.measured_kwh))
        {
            if pred.len() < 2 {
                continue;
            }
            let mut outline = pred.clone();
            outline.extend(meas.iter().rev().copied());
            chart.draw_series(std::iter::once(Polygon::new(
                outline,
                area_color.mix(0.18).filled(),
            )))?;
            area_drawn = true;
        }
        if area_drawn {
            let label = if saving {
                "avoided energy"
            } else {
                "excess energy"
            };
            entries.push((Swatch::Fill(area_color, 0.18), label.into()));
        }

        // Measured energy, one colour per period.
        for (period, color, label) in [
            ("baseline", BASELINE, "measured, baseline"),
            ("reporting", REPORTING, "measured, reporting"),
        ] {
            let mut any = false;
            for run in series(period, |b| b.measured_kwh) {
                chart.draw_series(LineSeries::new(run, color.stroke_width(2)).point_size(2))?;
                any = true;
            }
            if any {
                entries.push((Swatch::Line(color), label.into()));
            }
        }

        // The baseline model's prediction over both periods, dashed, on top
        // so it stays visible where it fits the baseline closely.
        let mut predicted = false;
        for period in ["baseline", "reporting"] {
            for run in series(period, |b| b.predicted_kwh) {
                if run.len() < 2 {
                    chart
                        .draw_series(run.iter().map(|p| Circle::new(*p, 2, PREDICTED.filled())))?;
                } else {
                    chart.draw_series(DashedLineSeries::new(
                        run,
                        6,
                        4,
                        PREDICTED.stroke_width(2),
                    ))?;
                }
                predicted = true;
            }
        }
        if predicted {
            entries.push((
                Swatch::Dashed(PREDICTED),
                "baseline model prediction".into(),
            ));
        }

        if (x0..=x1).contains(&o.reporting_start) {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(o.reporting_start, y_min), (o.reporting_start, y_max)],
                INK.stroke_width(1),
            )))?;
            entries.push((Swatch::Vertical(INK), "reporting period starts".into()));
        }

        legend(&side, 48, &entries)
    })
}

/// What the outcome chart shows: its buckets with finite values, by time,
/// the bucket length, and the axes' ranges.
struct Frame<'b> {
    pts: Vec<&'b BucketView>,
    length: Option<i64>,
    x0: i64,
    x1: i64,
    y_min: f64,
    y_max: f64,
}

impl Frame<'_> {
    /// One value of a period's buckets as runs of points, split where
    /// buckets are missing.
    fn series(&self, period: &str, f: fn(&BucketView) -> f64) -> Vec<Vec<(i64, f64)>> {
        let max_gap = self.length.map(|l| l + l / 2).unwrap_or(i64::MAX);
        let p: Vec<(i64, f64)> = self
            .pts
            .iter()
            .filter(|b| b.period == period)
            .map(|b| (b.bucket_start, f(b)))
            .collect();
        runs(&p, max_gap)
    }
}

fn outcome_frame(buckets: &[BucketView]) -> Result<Frame<'_>, String> {
    let mut pts: Vec<&BucketView> = buckets
        .iter()
        .filter(|b| b.measured_kwh.is_finite() && b.predicted_kwh.is_finite())
        .collect();
    pts.sort_by_key(|b| b.bucket_start);
    let (Some(t0), Some(t1)) = (
        pts.iter().map(|b| b.bucket_start).min(),
        pts.iter().map(|b| b.bucket_start).max(),
    ) else {
        return Err("no bucket with finite values".into());
    };
    // Far outside any plausible plant history (or spanning more than
    // twenty years) is bad data; refusing also keeps plotters' i64
    // coordinate arithmetic far from overflow.
    const LIMIT: i64 = 100_000_000_000_000; // ≈ year 5138
    const SPAN: i64 = 20 * 366 * 86_400_000;
    if t0.abs() > LIMIT || t1.abs() > LIMIT || t1 - t0 > SPAN {
        return Err(format!("bucket times out of range ({t0} .. {t1} ms)"));
    }
    let length = bucket_length(buckets).filter(|l| *l <= SPAN);
    let pad = ((t1 - t0) / 40)
        .max(length.unwrap_or(3_600_000) / 2)
        .max(60_000);
    let (x0, x1) = (t0 - pad, t1 + pad);
    let y_hi = pts
        .iter()
        .map(|b| b.measured_kwh.max(b.predicted_kwh))
        .fold(0.0, f64::max);
    let y_lo = pts
        .iter()
        .map(|b| b.measured_kwh.min(b.predicted_kwh))
        .fold(0.0, f64::min);
    let y_max = if y_hi > y_lo {
        y_hi + (y_hi - y_lo) * 0.18
    } else {
        y_lo + 1.0
    };
    let y_min = y_lo;
    Ok(Frame {
        pts,
        length,
        x0,
        x1,
        y_min,
        y_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_time_ticks_are_whole_hours() {
        let h = 3_600_000;
        let (ticks, f) = time_ticks(h / 2, 10 * h + 5, 6);
        assert_eq!(f, "%m-%d %H:%M");
        assert_eq!(ticks, vec![2 * h, 4 * h, 6 * h, 8 * h, 10 * h]);
        let (ticks, f) = time_ticks(0, 20 * 24 * h, 5);
        assert_eq!(f, "%Y-%m-%d");
        assert_eq!(ticks.len(), 3);
        // Degenerate ranges give no panic.
        let _ = time_ticks(i64::MAX - 5, i64::MAX, 5);
        let _ = time_ticks(5, 5, 5);
    }

    #[test]
    fn report_runs_split_on_gaps() {
        let p = [(0, 1.0), (10, 1.0), (20, 1.0), (100, 1.0), (110, 1.0)];
        let r = runs(&p, 15);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].len(), 3);
    }
}
