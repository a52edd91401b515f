//! Measurement & verification statistics (IPMVP Option B/C, ASHRAE Guideline 14).
//!
//! Conventions are pinned in DESIGN.md §4 and `schemas/outcomes.md`:
//! - Baseline model: ordinary least squares of energy on the driver
//!   (production units) with an intercept, or the mean when there is no driver.
//! - `CV(RMSE) = sqrt(SSE/(n−p)) / ȳ`, `NMBE = Σ(y−ŷ) / ((n−p)·ȳ)`, p counts the intercept.
//! - Avoided energy = Σ (prediction with reporting drivers − measured);
//!   `F = avoided / adjusted baseline`.
//! - `FSU = 1.26 · t(df) · CV · sqrt((1 + 2/n)/m) / F` with t two-sided at
//!   68 % / 90 % (quantiles 0.84 / 0.95 of Student's t, from `statrs`).
//!   When the lag-1 autocorrelation ρ of the baseline residuals (Pearson
//!   correlation of consecutive residual pairs) is ≥ 0.5, the corrected form
//!   uses `n' = n(1−ρ)/(1+ρ)`, `df = n'−p`, `CV' = CV·sqrt((n−p)/(n'−p))` and
//!   `sqrt((n/n')(1 + 2/n')/m)`.
//!
//! Everything here is plain arithmetic on slices: the engine collects the
//! baseline and reporting series and calls [`evaluate`].

use statrs::distribution::{ContinuousCDF, StudentsT};

pub use crate::config::Limits;

/// One period of a series: driver value (if the model has one), energy, and cost of that energy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub kwh: f64,
    pub cost: f64,
}

/// A fitted baseline model.
#[derive(Clone, Debug, PartialEq)]
pub struct Fit {
    pub intercept: f64,
    /// `None` for the mean model.
    pub slope: Option<f64>,
    pub n: usize,
    pub p: usize,
    pub sse: f64,
    pub mean_y: f64,
    pub r2: f64,
    pub cv_rmse: f64,
    pub nmbe: f64,
    pub rho: f64,
    pub x_min: f64,
    pub x_max: f64,
}

impl Fit {
    pub fn predict(&self, x: f64) -> f64 {
        self.intercept + self.slope.map(|b| b * x).unwrap_or(0.0)
    }

    pub fn model(&self) -> String {
        match self.slope {
            Some(b) => format!("kwh = {:.6} + {:.6} * units", self.intercept, b),
            None => format!("kwh = {:.6}", self.intercept),
        }
    }
}

/// Fits the baseline; `Err` says why the data cannot support a model.
pub fn fit(points: &[Point], with_driver: bool) -> Result<Fit, String> {
    let p = if with_driver { 2 } else { 1 };
    let n = points.len();
    if n < p + 2 {
        return Err(format!(
            "{n} baseline periods with data; the model needs at least {}",
            p + 2
        ));
    }
    let nf = n as f64;
    let mean_y = points.iter().map(|q| q.kwh).sum::<f64>() / nf;
    let mean_x = points.iter().map(|q| q.x).sum::<f64>() / nf;
    let (intercept, slope) = if with_driver {
        let sxx: f64 = points.iter().map(|q| (q.x - mean_x).powi(2)).sum();
        if sxx <= f64::EPSILON * mean_x.abs().max(1.0) {
            return Err("the driver does not vary over the baseline".into());
        }
        let sxy: f64 = points
            .iter()
            .map(|q| (q.x - mean_x) * (q.kwh - mean_y))
            .sum();
        let b = sxy / sxx;
        (mean_y - b * mean_x, Some(b))
    } else {
        (mean_y, None)
    };
    let pred = |x: f64| intercept + slope.map(|b| b * x).unwrap_or(0.0);
    let resid: Vec<f64> = points.iter().map(|q| q.kwh - pred(q.x)).collect();
    let sse: f64 = resid.iter().map(|e| e * e).sum();
    let sst: f64 = points.iter().map(|q| (q.kwh - mean_y).powi(2)).sum();
    if mean_y.abs() < f64::EPSILON {
        return Err("baseline energy averages zero".into());
    }
    let dof = (n - p) as f64;
    let r2 = if sst > 0.0 { 1.0 - sse / sst } else { 0.0 };
    Ok(Fit {
        intercept,
        slope,
        n,
        p,
        sse,
        mean_y,
        r2,
        cv_rmse: (sse / dof).sqrt() / mean_y,
        nmbe: resid.iter().sum::<f64>() / (dof * mean_y),
        rho: lag1_autocorrelation(&resid),
        x_min: points.iter().map(|q| q.x).fold(f64::INFINITY, f64::min),
        x_max: points.iter().map(|q| q.x).fold(f64::NEG_INFINITY, f64::max),
    })
}

/// Pearson correlation of `(e[i-1], e[i])` pairs; 0 when undefined.
pub fn lag1_autocorrelation(e: &[f64]) -> f64 {
    if e.len() < 3 {
        return 0.0;
    }
    let a = &e[..e.len() - 1];
    let b = &e[1..];
    let k = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / k, b.iter().sum::<f64>() / k);
    let sab: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let saa: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let sbb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if saa <= 0.0 || sbb <= 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// Two-sided Student's t quantile for confidence `level` (0.68 → the 0.84 quantile).
pub fn t_two_sided(level: f64, df: f64) -> Option<f64> {
    if df.is_nan() || df <= 0.0 {
        return None;
    }
    let t = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(t.inverse_cdf(1.0 - (1.0 - level) / 2.0))
}

/// Savings over a reporting period.
#[derive(Clone, Debug, PartialEq)]
pub struct Savings {
    pub m: usize,
    pub adjusted_baseline_kwh: f64,
    pub actual_kwh: f64,
    pub avoided_kwh: f64,
    pub avoided_cost: f64,
    pub fractional: f64,
    pub fsu68: Option<f64>,
    pub fsu90: Option<f64>,
    pub drivers_in_range: bool,
}

/// FSU at confidence `level` (G14 form, autocorrelation-corrected when ρ ≥ 0.5).
pub fn fsu(fit: &Fit, m: usize, f: f64, level: f64) -> Option<f64> {
    if m == 0 || f <= 0.0 {
        return None;
    }
    let (n, p, m) = (fit.n as f64, fit.p as f64, m as f64);
    let (n_eff, cv, scale) = if fit.rho >= 0.5 {
        let n1 = n * (1.0 - fit.rho) / (1.0 + fit.rho);
        if n1 <= p {
            return None;
        }
        let cv1 = fit.cv_rmse * ((n - p) / (n1 - p)).sqrt();
        (n1, cv1, n / n1)
    } else {
        (n, fit.cv_rmse, 1.0)
    };
    let t = t_two_sided(level, n_eff - p)?;
    Some(1.26 * t * cv * (scale * (1.0 + 2.0 / n_eff) / m).sqrt() / f)
}

/// Avoided energy and cost, F and FSU for the reporting points seen so far.
pub fn savings(fit: &Fit, reporting: &[Point]) -> Savings {
    let adjusted: f64 = reporting.iter().map(|q| fit.predict(q.x)).sum();
    let actual: f64 = reporting.iter().map(|q| q.kwh).sum();
    // Avoided cost prices each period's avoided kWh at that period's average price.
    let avoided_cost: f64 = reporting
        .iter()
        .map(|q| {
            let price = if q.kwh.abs() > 0.0 {
                q.cost / q.kwh
            } else {
                0.0
            };
            (fit.predict(q.x) - q.kwh) * price
        })
        .sum();
    let avoided = adjusted - actual;
    let f = if adjusted.abs() > 0.0 {
        avoided / adjusted
    } else {
        0.0
    };
    let drivers_in_range = fit.slope.is_none()
        || reporting
            .iter()
            .all(|q| q.x >= fit.x_min - 1e-9 && q.x <= fit.x_max + 1e-9);
    Savings {
        m: reporting.len(),
        adjusted_baseline_kwh: adjusted,
        actual_kwh: actual,
        avoided_kwh: avoided,
        avoided_cost,
        fractional: f,
        fsu68: fsu(fit, reporting.len(), f, 0.68),
        fsu90: fsu(fit, reporting.len(), f, 0.90),
        drivers_in_range,
    }
}

/// `verified` or `not_verified`, with the reasons it failed.
pub fn verdict(fit: &Fit, s: &Savings, limits: &Limits) -> (&'static str, Vec<String>) {
    let mut why = Vec::new();
    if fit.cv_rmse > limits.max_cv_rmse {
        why.push(format!(
            "CV(RMSE) {:.2} % above {:.2} %",
            fit.cv_rmse * 100.0,
            limits.max_cv_rmse * 100.0
        ));
    }
    if fit.nmbe.abs() > limits.max_abs_nmbe {
        why.push(format!(
            "|NMBE| {:.3} % above {:.3} %",
            fit.nmbe.abs() * 100.0,
            limits.max_abs_nmbe * 100.0
        ));
    }
    if !s.drivers_in_range {
        why.push(format!(
            "reporting drivers outside the baseline range {}..{}",
            fit.x_min, fit.x_max
        ));
    }
    if s.avoided_kwh <= 0.0 {
        why.push(format!("no savings: avoided {:.3} kWh", s.avoided_kwh));
    } else {
        match s.fsu68 {
            Some(u) if u < limits.max_fsu68 => {}
            Some(u) => why.push(format!(
                "FSU at 68 % {:.1} % not below {:.1} %",
                u * 100.0,
                limits.max_fsu68 * 100.0
            )),
            None => why.push("FSU undefined".into()),
        }
    }
    if why.is_empty() {
        ("verified", why)
    } else {
        ("not_verified", why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(x: &[f64], y: &[f64]) -> Vec<Point> {
        x.iter()
            .zip(y)
            .map(|(x, y)| Point {
                x: *x,
                kwh: *y,
                cost: 0.0,
            })
            .collect()
    }

    fn rel(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1e-12)
    }

    /// Public vector PV3 (shared fixtures/value_vectors.md), hand-computed.
    #[test]
    fn pv3_statistics() {
        let f = fit(
            &pts(
                &[50., 60., 70., 80., 90., 100.],
                &[710., 760., 870., 950., 1000., 1110.],
            ),
            true,
        )
        .unwrap();
        assert!(rel(f.intercept, 300.0) && rel(f.slope.unwrap(), 8.0));
        assert!(rel(f.sse, 1200.0));
        assert!(rel(f.cv_rmse, 300f64.sqrt() / 900.0));
        assert!(f.nmbe.abs() < 1e-12);
        assert!((f.r2 - 0.98940).abs() < 5e-6);
        assert!((f.rho + 2.0 / 3.0).abs() < 1e-9);
        let s = savings(&f, &pts(&[60., 80., 90.], &[750., 900., 980.]));
        assert!(rel(s.adjusted_baseline_kwh, 2740.0) && rel(s.avoided_kwh, 110.0));
        assert!(rel(s.fractional, 110.0 / 2740.0));
        assert!((s.fsu68.unwrap() - 0.4568).abs() < 5e-5, "{:?}", s.fsu68);
        assert!((s.fsu90.unwrap() - 0.8584).abs() < 5e-5, "{:?}", s.fsu90);
        assert_eq!(verdict(&f, &s, &Limits::default()).0, "verified");
        assert!((t_two_sided(0.68, 4.0).unwrap() - 1.13440).abs() < 5e-5);
        assert!((t_two_sided(0.90, 4.0).unwrap() - 2.13185).abs() < 5e-5);
    }

    #[test]
    fn too_little_or_constant_data_is_insufficient() {
        assert!(fit(&pts(&[1., 2., 3.], &[1., 2., 3.]), true).is_err());
        assert!(fit(&pts(&[5.; 6], &[1., 2., 3., 4., 5., 6.]), true).is_err());
        assert!(fit(&pts(&[0.; 3], &[1., 2., 3.]), false).is_ok());
    }

    #[test]
    fn autocorrelated_residuals_widen_the_uncertainty() {
        // Residuals drift slowly (ρ high): the corrected FSU exceeds the naive one.
        let x: Vec<f64> = (0..60).map(|i| 50.0 + (i % 6) as f64 * 10.0).collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, x)| 300.0 + 8.0 * x + 20.0 * (i as f64).sin())
            .collect();
        let f = fit(&pts(&x, &y), true).unwrap();
        assert!(f.rho >= 0.5, "rho {}", f.rho);
        let naive = Fit {
            rho: 0.0,
            ..f.clone()
        };
        let a = fsu(&f, 6, 0.05, 0.68).unwrap();
        let b = fsu(&naive, 6, 0.05, 0.68).unwrap();
        assert!(a > b, "{a} vs {b}");
    }
}
