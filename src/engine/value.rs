//! The value-layer operator: one worker runs the [`ValueLayer`] state machine.
//!
//! Findings, per-window energy, production runs and status updates are
//! exchanged to worker 0, buffered per timely time, and applied once the time
//! is complete; then the layer steps to the frontier (the watermark) and its
//! new row versions go to the sink channel. Its inputs are small (findings
//! and window-level energy, never raw samples), so one worker suffices and
//! the result is the same for any worker count.

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::output::TimeBuffer;
use crate::value::layer::{ValueCounters, ValueIn, ValueLayer, ValueOut};

/// Runs `layer` on worker 0 over `stream`; `emit` receives each step's
/// output (in parts, for a step with many actions: the counters come with
/// the last), `progress` the operator's frontier after it (see [`super::output::revisions`]).
pub fn value_op<'s, F, P>(
    stream: Stream<'s, u64, Vec<(ValueIn, u64, isize)>>,
    mut layer: ValueLayer,
    mut emit: F,
    mut progress: P,
) where
    F: FnMut(ValueOut, Option<ValueCounters>) + 'static,
    P: FnMut(u64) + 'static,
{
    let mut reported = 0u64;
    let exchange = Exchange::new(|_: &(ValueIn, u64, isize)| 0u64);
    let mut pending = TimeBuffer::default();
    let mut last: Option<i64> = None;
    let mut ended = false;
    stream.sink(exchange, "value", move |(input, frontier)| {
        input.for_each_stamp(|stamp, data| {
            for batch in data {
                tracing::trace!(target: "plantflow::latency", epoch = stamp.least().copied().unwrap_or(0), n = batch.len(), "value received");
                pending.extend(batch.drain(..));
            }
        });
        // Each complete time is its own step, so in-interval projections and
        // lifecycle ordering see the data exactly as a live run would. Updates
        // are consolidated first: a join may carry +1 +1 −1 for one row, and
        // aged-out retractions are recognised by their net sign.
        while let Some((t, updates)) = pending.pop_complete(frontier) {
            for (d, r) in updates {
                layer.apply(d, t as i64, r);
            }
            let now = (t as i64 - 1).max(last.unwrap_or(i64::MIN));
            step_and_emit(&mut layer, now, false, &mut emit);
            last = Some(now);
        }
        if ended {
            super::output::report_progress(frontier, &mut reported, &mut progress);
            return;
        }
        let (now, end) = match frontier.frontier().first() {
            // Times are watermark epochs + 1: everything before `t - 1` is complete.
            Some(t) => (*t as i64 - 1, false),
            None => (last.unwrap_or(i64::MIN), true),
        };
        if end || last.is_none_or(|l| now > l) {
            step_and_emit(&mut layer, now, end, &mut emit);
            last = Some(now);
            ended = end;
        }
        super::output::report_progress(frontier, &mut reported, &mut progress);
    });
}

/// Steps `layer` to `now` and hands its output to `emit`: the parts of a
/// large step as they come, then the rest with the layer's counters.
fn step_and_emit<F>(layer: &mut ValueLayer, now: i64, end: bool, emit: &mut F)
where
    F: FnMut(ValueOut, Option<ValueCounters>),
{
    let mut parted = false;
    let out = layer.step(now, end, &mut |p| {
        tracing::trace!(target: "plantflow::latency", epoch = now, n = p.actions.len(), "value part");
        parted = true;
        emit(p, None)
    });
    tracing::trace!(target: "plantflow::latency", epoch = now, n = out.actions.len(), "value stepped");
    if parted || !out.is_empty() {
        emit(out, Some(layer.counters()));
    }
}
