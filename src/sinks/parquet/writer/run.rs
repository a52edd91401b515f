//! The thread that drains the engine's batches into the writer.

use super::*;

/// The writer loop: runs until every sender is gone, then commits all files.
pub fn run_writer<B: std::borrow::Borrow<Stamped>>(
    rx: Receiver<B>,
    mut writer: ParquetWriter,
) -> Result<WriterReport, String> {
    let tick = Duration::from_millis(100);
    // Stamped rows of times some engine output has not passed yet.
    let mut held = Vec::new();
    // The test hook of a slow disk: a pause per batch of the engine's rows.
    let slow = std::env::var("PLANTFLOW_TEST_SLOW_WRITER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    loop {
        match rx.recv_timeout(tick) {
            Ok(batch) => {
                writer.take(batch, &mut held)?;
                // Drain what is queued before committing on event time.
                while let Ok(batch) = rx.try_recv() {
                    if let Some(d) = slow.filter(|_| batch.borrow().batch.engine_bytes() > 0) {
                        std::thread::sleep(d);
                    }
                    writer.take(batch, &mut held)?;
                }
                writer.roll_event_time()?;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        writer.roll_aged()?;
    }
    // The engine has ended: so does the thread that writes checkpoints;
    // the last commit names the last one it wrote.
    if let Some(c) = writer.durable.as_ref().and_then(|d| d.checkpoints.clone()) {
        let thread = c.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
    // Every sender is gone. A run that read its input to its end (or
    // drains) has nothing before any time still to come; a stopped one
    // leaves what is after its progress to the next start (the engine sent
    // nothing after the stop, and these rows are made again then).
    if writer.stopped() {
        if writer.durable.as_ref().is_some_and(|d| d.logged) {
            let progress = writer.appended;
            // The checkpoint the last commit names: dead letters stamped at
            // or after it are made again by the next start (the log after
            // it is replayed, the engine's outputs computed again), so
            // written now they would be in the lake twice.
            let again = writer
                .ready(writer.before())
                .or_else(|| writer.durable.as_ref().and_then(|d| d.named.clone()))
                .map_or(0, |c| c.at);
            writer.appended = u64::MAX;
            for b in held {
                let s = b.borrow();
                let keep = match &s.batch {
                    SinkBatch::Gaps(_) => true,
                    SinkBatch::DeadLetters(_) => s.time.is_none_or(|t| t < again),
                    _ => false,
                };
                if keep {
                    writer.place(b, &mut Vec::new())?;
                }
            }
            writer.appended = progress;
        }
        writer.ending = true;
        return writer.finish();
    }
    writer.appended = u64::MAX;
    for b in held {
        writer.place(b, &mut Vec::new())?;
    }
    writer.ending = true;
    writer.finish()
}
