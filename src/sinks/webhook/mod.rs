//! `webhook` sink: every action revision (and optionally outcome revision)
//! POSTed as one JSON document to a work-order system, a chat or an
//! incident tool.
//!
//! The body is the row's document (the one `jsonl` writes and MQTT
//! publishes), or a MiniJinja template over it that makes JSON (values are
//! written as JSON: `{{ asset }}` is a quoted, escaped string). Every
//! request carries an idempotency key, `<action_id>-<revision>` (outcomes:
//! `<action_id>-outcome-<revision>`), so a receiver that retries or sees a
//! revision again after a restart (delivery is at least once) can tell.
//!
//! Deliveries go one at a time, in order, from a bounded queue on a thread
//! of their own: a timeout, a refused connection, HTTP 5xx, 408, 425 or 429
//! is retried with exponential backoff (0.5 s doubling to 30 s) for
//! `retry_for`; any other answer, a template that does not make JSON, a
//! queue that is full, or a delivery still failing after `retry_for` (once
//! the run is stopping on a signal: after three tries) becomes a
//! `dead_letter` row and the next revision goes. The sink never holds the lake. Header values
//! from `headers_env` and the address's user and query are never logged.

pub mod config;

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::WebhookPlan;

use crate::model::{DeadLetter, SinkBatch};

/// Whether the run is stopping on a signal or a failure.
pub type Stopping = Arc<dyn Fn() -> bool + Send + Sync>;

/// One revision to send: its idempotency key and document.
pub use crate::model::message::Version as Delivery;

/// A template's environment: JSON output, values written as JSON.
fn environment(text: &str) -> Result<minijinja::Environment<'static>, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Json);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template_owned("body", text.to_string())?;
    Ok(env)
}

/// Whether a template compiles (the error with its line if not).
pub fn compile(text: &str) -> Result<(), String> {
    environment(text).map(|_| ()).map_err(|e| match e.line() {
        Some(line) => format!("line {line}: {}", e.detail().unwrap_or(&e.to_string())),
        None => e.to_string(),
    })
}

/// An address for messages: scheme, host, port and path (no user, no query).
pub fn redact(url: &str) -> String {
    match ureq::http::Uri::try_from(url) {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme_str().unwrap_or("?"),
            u.host().unwrap_or("?"),
            u.port_u16().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => "(not an address)".into(),
    }
}

/// The revisions of a batch that `tables` sends.
pub fn deliveries(tables: &[String], dataflow: &str, batch: &SinkBatch) -> Vec<Delivery> {
    crate::model::message::versions(dataflow, batch, |t| tables.iter().any(|x| x == t))
}

/// A revision the queue had no room for: its dead letter (the tap's).
pub fn queue_full(
    plan: &WebhookPlan,
    d: &Delivery,
    stats: &crate::stats::Stats,
) -> crate::model::Stamped {
    let id = &plan.id;
    stats.event(
        &format!("webhook `{id}`: revisions not delivered (dead letter)"),
        1,
    );
    let reason = format!(
        "webhook `{id}` not delivered: the queue is full ({} revisions)",
        plan.max_queue
    );
    crate::model::Stamped {
        time: None,
        batch: SinkBatch::DeadLetters(vec![DeadLetter::text(
            &format!("sink:{id}"),
            reason,
            String::from_utf8_lossy(&d.doc),
        )]),
    }
}

/// What one attempt came to.
enum Attempt {
    Sent,
    /// Worth trying again (and why).
    Again(String),
    /// Not worth trying again.
    Refused(String),
}

/// A webhook's sender: renders, posts, retries.
pub struct Sender {
    plan: WebhookPlan,
    agent: ureq::Agent,
    template: Option<minijinja::Environment<'static>>,
    dead: std::sync::mpsc::Sender<crate::model::Stamped>,
    stats: Arc<crate::stats::Stats>,
    /// Whether the run is stopping (a signal, a failure): a failing
    /// delivery then gets three tries, and no wait between them is long.
    stopping: Stopping,
}

impl Sender {
    pub fn new(
        plan: WebhookPlan,
        dead: std::sync::mpsc::Sender<crate::model::Stamped>,
        stats: Arc<crate::stats::Stats>,
        stopping: Stopping,
    ) -> Result<Sender, String> {
        let template = match &plan.template {
            Some((path, text)) => {
                Some(environment(text).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &plan.ca {
            let certs: Vec<_> = ca
                .iter()
                .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
                .collect();
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(plan.timeout_ms)))
            .http_status_as_error(false)
            .user_agent(concat!("plantflow/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .new_agent();
        Ok(Sender {
            plan,
            agent,
            template,
            dead,
            stats,
            stopping,
        })
    }

    /// The body of a revision: its document, or the template over it.
    fn body(&self, d: &Delivery) -> Result<Vec<u8>, String> {
        let Some(env) = &self.template else {
            return Ok(d.doc.clone());
        };
        let mut ctx: serde_json::Value =
            serde_json::from_slice(&d.doc).map_err(|e| e.to_string())?;
        ctx["idempotency_key"] = serde_json::Value::String(d.key.clone());
        let body = env
            .get_template("body")
            .and_then(|t| t.render(&ctx))
            .map_err(|e| format!("the template failed: {e}"))?;
        serde_json::from_str::<serde_json::Value>(&body)
            .map_err(|e| format!("the template made no JSON document: {e}"))?;
        Ok(body.into_bytes())
    }

    fn attempt(&self, d: &Delivery, body: &[u8]) -> Attempt {
        let mut req = self
            .agent
            .post(&self.plan.url)
            .header("Content-Type", "application/json")
            .header(self.plan.idempotency_header.as_str(), d.key.as_str());
        for (name, value) in &self.plan.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        for (name, value) in &self.plan.secret_headers {
            req = req.header(name.as_str(), value.0.as_str());
        }
        match req.send(body) {
            Ok(mut r) => {
                let status = r.status().as_u16();
                if (200..300).contains(&status) {
                    return Attempt::Sent;
                }
                let text = r
                    .body_mut()
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .unwrap_or_default();
                let text: String = text.chars().take(200).collect();
                let why = format!("HTTP {status} {}", text.trim());
                if status >= 500 || matches!(status, 408 | 425 | 429) {
                    Attempt::Again(why)
                } else {
                    Attempt::Refused(why)
                }
            }
            // A transport error: its text names the host, never a header.
            Err(e) => Attempt::Again(e.to_string()),
        }
    }

    /// Sends one revision, retrying for `retry_for` (three attempts at
    /// most once the run is stopping); a failure is dead-lettered.
    pub fn deliver(&self, d: &Delivery) {
        let id = &self.plan.id;
        let body = match self.body(d) {
            Ok(b) => b,
            Err(e) => return self.give_up(d, &e),
        };
        let started = Instant::now();
        let mut wait = Duration::from_millis(500);
        let mut tries = 0u32;
        loop {
            tries += 1;
            match self.attempt(d, &body) {
                Attempt::Sent => {
                    self.stats
                        .event(&format!("webhook `{id}`: revisions delivered"), 1);
                    return;
                }
                Attempt::Refused(why) => return self.give_up(d, &why),
                Attempt::Again(why) => {
                    let out_of_time =
                        started.elapsed() >= Duration::from_millis(self.plan.retry_for_ms);
                    if out_of_time || ((self.stopping)() && tries >= 3) {
                        return self.give_up(d, &format!("{why} (after {tries} attempts)"));
                    }
                    self.stats.event(&format!("webhook `{id}`: retries"), 1);
                    tracing::warn!(
                        sink = %id,
                        url = %redact(&self.plan.url),
                        key = %d.key,
                        "webhook: {why}; trying again in {:.1} s",
                        wait.as_secs_f64()
                    );
                    let slept = Instant::now();
                    while slept.elapsed() < wait && !(self.stopping)() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// A revision that was not delivered: one `dead_letter` row.
    pub fn give_up(&self, d: &Delivery, why: &str) {
        let id = &self.plan.id;
        self.stats.event(
            &format!("webhook `{id}`: revisions not delivered (dead letter)"),
            1,
        );
        tracing::warn!(sink = %id, key = %d.key, "webhook: not delivered: {why}");
        let reason = format!("webhook `{id}` not delivered: {why}");
        let row = DeadLetter::text(
            &format!("sink:{id}"),
            reason,
            String::from_utf8_lossy(&d.doc),
        );
        let _ = self.dead.send(crate::model::Stamped {
            time: None,
            batch: SinkBatch::DeadLetters(vec![row]),
        });
    }

    /// Sends what arrives on `queue`, in order, until it closes.
    pub fn run(self, queue: Receiver<Delivery>) {
        for d in queue {
            self.deliver(&d);
        }
    }
}
