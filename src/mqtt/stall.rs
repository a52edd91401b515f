//! Watches a live subscription for silence. A connection that is up but
//! delivers nothing for `stall_after` (a QoS 2 flow stuck in the broker,
//! a subscription the broker dropped, publishers gone) is reported once, a
//! warning and a counter, and again when messages resume; the same for
//! acknowledgements that cannot go out.

use std::time::{Duration, Instant};

/// What the watch has to say after a check.
#[derive(Debug, PartialEq)]
pub enum Stall {
    /// Connected, and no message for this long.
    Quiet(Duration),
    /// Acknowledgements have waited this long to go out.
    Acks(Duration),
}

/// The state of one connection's watch; `after = None` turns it off.
#[derive(Debug)]
pub struct StallWatch {
    after: Option<Duration>,
    /// When the connection came up or the last message arrived; `None`
    /// while disconnected (a lost connection is reported on its own).
    last: Option<Instant>,
    quiet_reported: bool,
    /// Since when acknowledgements have been waiting (none: `None`).
    acks_since: Option<Instant>,
    acks_reported: bool,
}

impl StallWatch {
    pub fn new(after: Option<Duration>) -> StallWatch {
        StallWatch {
            after,
            last: None,
            quiet_reported: false,
            acks_since: None,
            acks_reported: false,
        }
    }

    /// How often [`StallWatch::check`] should run.
    pub fn tick(&self) -> Duration {
        self.after
            .map(|a| (a / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)))
            .unwrap_or(Duration::from_secs(3600))
    }

    pub fn connected(&mut self, now: Instant) {
        self.last = Some(now);
        self.quiet_reported = false;
    }

    pub fn lost(&mut self) {
        self.last = None;
        self.quiet_reported = false;
    }

    /// A message arrived; returns how long it was quiet if that was reported.
    pub fn message(&mut self, now: Instant) -> Option<Duration> {
        let was = self.last.replace(now);
        std::mem::take(&mut self.quiet_reported)
            .then(|| was.map(|w| now - w))
            .flatten()
    }

    /// Whether acknowledgements are waiting; returns how long they waited
    /// if that was reported.
    pub fn acks_waiting(&mut self, waiting: bool, now: Instant) -> Option<Duration> {
        match (waiting, self.acks_since) {
            (true, None) => {
                self.acks_since = Some(now);
                None
            }
            (false, Some(since)) => {
                self.acks_since = None;
                std::mem::take(&mut self.acks_reported).then(|| now - since)
            }
            _ => None,
        }
    }

    /// What to report now (each stall once).
    pub fn check(&mut self, now: Instant) -> Option<Stall> {
        let after = self.after?;
        if let Some(since) = self.acks_since {
            if !self.acks_reported && now - since >= after {
                self.acks_reported = true;
                return Some(Stall::Acks(now - since));
            }
        }
        let last = self.last?;
        if !self.quiet_reported && now - last >= after {
            self.quiet_reported = true;
            return Some(Stall::Quiet(now - last));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_quiet_connection_is_reported_once_and_its_end_too() {
        let t = Instant::now();
        let mut w = StallWatch::new(Some(10 * S));
        assert_eq!(w.check(t + 60 * S), None, "not connected: nothing to say");
        w.connected(t);
        assert_eq!(w.check(t + 9 * S), None);
        assert_eq!(w.check(t + 10 * S), Some(Stall::Quiet(10 * S)));
        assert_eq!(w.check(t + 30 * S), None, "once");
        assert_eq!(w.message(t + 31 * S), Some(31 * S), "resumed after 31 s");
        assert_eq!(w.message(t + 32 * S), None);
        assert_eq!(w.check(t + 41 * S), None, "9 s since the last message");
        assert_eq!(w.check(t + 42 * S), Some(Stall::Quiet(10 * S)));
        w.lost();
        assert_eq!(
            w.check(t + 100 * S),
            None,
            "a lost connection is not a stall"
        );
    }

    #[test]
    fn acknowledgements_that_wait_are_reported() {
        let t = Instant::now();
        let mut w = StallWatch::new(Some(10 * S));
        w.connected(t);
        w.message(t);
        assert_eq!(w.acks_waiting(true, t), None);
        assert_eq!(w.message(t + 5 * S), None);
        assert_eq!(w.acks_waiting(true, t + 5 * S), None, "still the same wait");
        assert_eq!(w.check(t + 12 * S), Some(Stall::Acks(12 * S)));
        assert_eq!(w.acks_waiting(false, t + 13 * S), Some(13 * S));
        assert_eq!(w.acks_waiting(false, t + 14 * S), None);
    }

    #[test]
    fn off_says_nothing() {
        let t = Instant::now();
        let mut w = StallWatch::new(None);
        w.connected(t);
        w.acks_waiting(true, t);
        assert_eq!(w.check(t + 3600 * S), None);
    }
}
