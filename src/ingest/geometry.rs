//! Window geometry: where a sample's window starts and when a window (or
//! an action period) leaves state. Sources use it to judge lateness, the
//! engine to close and retract windows.

/// Window geometry shared with the sinks.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub size_ms: i64,
    /// Windows are retracted a whole `period_ms` bucket at a time.
    pub period_ms: i64,
    pub retention_ms: i64,
}

impl Geometry {
    pub fn start_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.size_ms) * self.size_ms
    }

    /// When a window (or action period) ending at `end` leaves state.
    pub fn retract_at(&self, end: i64) -> i64 {
        let p = self.period_ms;
        (end + p - 1).div_euclid(p) * p + self.retention_ms
    }
}
