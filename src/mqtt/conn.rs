//! One MQTT connection, v3.1.1 or v5, plain or TLS, behind one small API so
//! the source and the publish sink do not care which protocol version runs.
//!
//! - `mqtt://host:port` or `mqtts://host:port` (rustls with the ring provider;
//!   a CA file or the system roots; optional client certificate and key).
//! - Credentials come from the environment or from files named in config and
//!   are never logged ([`Secret`] prints as `***`).
//! - Persistent sessions: `clean = false` (v3.1.1 clean session 0, v5 clean
//!   start 0 with a session expiry), a stable client id, manual acks.
//! - Reconnects are the caller's loop: [`Conn::poll`] after an error dials
//!   again; the caller sleeps with backoff in between.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;

pub use crate::model::Secret;

/// MQTT protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

/// Validated connection settings.
#[derive(Clone, Debug)]
pub struct ConnPlan {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub version: Version,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ca_file: Option<std::path::PathBuf>,
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    pub keep_alive_s: u64,
    /// Start a new session (discard the broker's state for this client id).
    pub clean: bool,
    /// v5 session expiry in seconds (ignored for v3.1.1, where a persistent session never expires).
    pub session_expiry_s: u32,
    /// Unacknowledged QoS 1/2 messages in flight (receive maximum in v5).
    pub inflight: u16,
    /// Largest packet the client accepts; payloads above the source's own
    /// limit are dead-lettered rather than dropping the connection.
    pub max_packet: usize,
}

/// Parses `mqtt://host[:port]` / `mqtts://host[:port]` (also `tcp://`, `ssl://`).
/// `url` with the password of its user info (`user:pass@`) replaced by
/// `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_string(),
    }
}

pub fn parse_url(url: &str) -> Result<(String, u16, bool), String> {
    let shown = redact_url(url);
    let url = shown.as_str();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!("`{url}` is not a URL: expected mqtt://host:port or mqtts://host:port")
    })?;
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" | "tls" => true,
        other => return Err(format!("unsupported scheme `{other}` (mqtt or mqtts)")),
    };
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') || hostport.contains('@') {
        return Err(format!(
            "`{url}`: give only host and port; credentials go in `username`/`password_env`"
        ));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("`{url}`: invalid port `{p}`"))?;
            (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                port,
            )
        }
        _ => (hostport.to_string(), if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(format!("`{url}`: no host"));
    }
    Ok((host, port, tls))
}

fn tls_config(p: &ConnPlan) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match &p.ca_file {
        Some(ca) => {
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read CA file `{}`: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("CA file `{}`: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("CA file `{}`: {e}", ca.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
    }
    if roots.is_empty() {
        return Err("no trusted CA certificates (set `ca_file`)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let cfg = match (&p.client_cert, &p.client_key) {
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("cannot read client certificate `{}`: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client certificate `{}`: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read client key `{}`: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("`client_cert` and `client_key` go together".into()),
    };
    Ok(Arc::new(cfg))
}

/// A received publish, with what is needed to acknowledge it later.
#[derive(Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// Connection generation and ack token (QoS 1/2 with manual acks).
    pub token: Option<(u64, AckToken)>,
}

/// Acknowledges one QoS 1/2 message (the publish without its payload).
#[derive(Debug)]
pub enum AckToken {
    V4(rumqttc::Publish),
    V5(v5::mqttbytes::v5::Publish),
}

/// What a poll produced.
#[derive(Debug)]
pub enum Incoming {
    Publish(Box<Msg>),
    /// Connected; `session_present` says whether the broker kept our session.
    Connected {
        session_present: bool,
    },
    /// The connection failed or closed; poll again to reconnect.
    Error(String),
    Other,
}

/// A client handle (cheap to clone).
#[derive(Clone, Debug)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> v5::mqttbytes::QoS {
    match q {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl Client {
    /// Subscribes to `(filter, qos)` pairs.
    pub async fn subscribe(&self, filters: &[(String, u8)]) -> Result<(), String> {
        if filters.is_empty() {
            return Ok(());
        }
        match self {
            Client::V4(c) => c
                .subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), qos4(*q))),
                )
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| v5::mqttbytes::v5::Filter::new(f.clone(), qos5(*q))),
                )
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues an acknowledgement without waiting; fails when the request
    /// queue is full (try again later, keeping the order).
    pub fn try_ack(&self, t: &AckToken) -> Result<(), String> {
        match (self, t) {
            (Client::V4(c), AckToken::V4(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            (Client::V5(c), AckToken::V5(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            _ => Err("ack token of another protocol version".into()),
        }
    }

    pub async fn publish(
        &self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .publish(topic, qos4(qos), retain, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .publish(topic, qos5(qos), retain, payload)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn disconnect(&self) {
        match self {
            Client::V4(c) => {
                let _ = c.disconnect().await;
            }
            Client::V5(c) => {
                let _ = c.disconnect().await;
            }
        }
    }
}

enum Loop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// A connection: the client handle and its event loop.
pub struct Conn {
    pub client: Client,
    lp: Loop,
    manual_acks: bool,
    /// QoS 1/2 publishes the broker has acknowledged (PUBACK / PUBCOMP).
    acked: u64,
    /// Incremented on every connect: acks are only valid on the connection
    /// that received the message (after a reconnect the broker resends it).
    generation: u64,
}

impl Conn {
    /// Sets up (does not dial yet; the first poll connects).
    /// `queue` bounds the client's request queue: small for a publisher that
    /// orders its own queues (see `publish::Queues`).
    pub fn new(
        p: &ConnPlan,
        manual_acks: bool,
        last_will: Option<(String, Vec<u8>)>,
        queue: usize,
    ) -> Result<Conn, String> {
        let transport = if p.tls {
            rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls_config(p)?))
        } else {
            rumqttc::Transport::tcp()
        };
        let keep_alive = Duration::from_secs(p.keep_alive_s.max(5));
        Ok(match p.version {
            Version::V311 => {
                let mut o = rumqttc::MqttOptions::new(&p.client_id, &p.host, p.port);
                o.set_transport(transport)
                    .set_keep_alive(keep_alive)
                    .set_clean_session(p.clean)
                    .set_manual_acks(manual_acks)
                    .set_inflight(p.inflight.max(1))
                    .set_max_packet_size(p.max_packet, p.max_packet);
                if let (Some(u), pw) = (&p.username, &p.password) {
                    o.set_credentials(u, pw.as_ref().map(|s| s.0.as_str()).unwrap_or(""));
                }
                if let Some((topic, payload)) = last_will {
                    o.set_last_will(rumqttc::LastWill::new(
                        topic,
                        payload,
                        rumqttc::QoS::AtLeastOnce,
                        false,
                    ));
                }
                let (c, l) = rumqttc::AsyncClient::new(o, queue.max(1));
                Conn {
                    client: Client::V4(c),
                    lp: Loop::V4(Box::new(l)),
                    manual_acks,
                    acked: 0,
                    generation: 0,
                }
            }
            Version::V5 => {
                let mut o = v5::MqttOptions::new(&p.client_id, &p.host, p.port);
                o.set_transport(transport)
                    .set_keep_alive(keep_alive)
                    .set_clean_start(p.clean)
                    .set_manual_acks(manual_acks)
                    .set_receive_maximum(Some(p.inflight.max(1)))
                    .set_outgoing_inflight_upper_limit(p.inflight.max(1))
                    .set_max_packet_size(Some(p.max_packet.min(u32::MAX as usize) as u32));
                if !p.clean {
                    o.set_session_expiry_interval(Some(p.session_expiry_s));
                }
                if let (Some(u), pw) = (&p.username, &p.password) {
                    o.set_credentials(u, pw.as_ref().map(|s| s.0.as_str()).unwrap_or(""));
                }
                if let Some((topic, payload)) = last_will {
                    o.set_last_will(v5::mqttbytes::v5::LastWill::new(
                        topic,
                        payload,
                        v5::mqttbytes::QoS::AtLeastOnce,
                        false,
                        None,
                    ));
                }
                let (c, l) = v5::AsyncClient::new(o, queue.max(1));
                Conn {
                    client: Client::V5(c),
                    lp: Loop::V5(Box::new(l)),
                    manual_acks,
                    acked: 0,
                    generation: 0,
                }
            }
        })
    }

    /// The current connection's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Publishes the broker has acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Drives the connection; returns the next interesting event.
    pub async fn poll(&mut self) -> Incoming {
        let manual = self.manual_acks;
        let acked = &mut self.acked;
        let generation = &mut self.generation;
        let gen = *generation;
        match &mut self.lp {
            Loop::V4(l) => match l.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let token = (manual && p.qos != rumqttc::QoS::AtMostOnce).then(|| {
                        (
                            gen,
                            AckToken::V4(rumqttc::Publish {
                                dup: p.dup,
                                qos: p.qos,
                                retain: p.retain,
                                topic: String::new(),
                                pkid: p.pkid,
                                payload: Bytes::new(),
                            }),
                        )
                    });
                    Incoming::Publish(Box::new(Msg {
                        qos: p.qos as u8,
                        retain: p.retain,
                        topic: p.topic,
                        payload: p.payload,
                        token,
                    }))
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => {
                    *generation += 1;
                    Incoming::Connected {
                        session_present: a.session_present,
                    }
                }
                Ok(rumqttc::Event::Incoming(
                    rumqttc::Packet::PubAck(_) | rumqttc::Packet::PubComp(_),
                )) => {
                    *acked += 1;
                    Incoming::Other
                }
                Ok(_) => Incoming::Other,
                Err(e) => Incoming::Error(e.to_string()),
            },
            Loop::V5(l) => match l.poll().await {
                Ok(v5::Event::Incoming(v5::mqttbytes::v5::Packet::Publish(p))) => {
                    let token = (manual && p.qos != v5::mqttbytes::QoS::AtMostOnce).then(|| {
                        (
                            gen,
                            AckToken::V5(v5::mqttbytes::v5::Publish {
                                dup: p.dup,
                                qos: p.qos,
                                retain: p.retain,
                                topic: Bytes::new(),
                                pkid: p.pkid,
                                payload: Bytes::new(),
                                properties: None,
                            }),
                        )
                    });
                    Incoming::Publish(Box::new(Msg {
                        qos: p.qos as u8,
                        retain: p.retain,
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                        token,
                    }))
                }
                Ok(v5::Event::Incoming(v5::mqttbytes::v5::Packet::ConnAck(a))) => {
                    *generation += 1;
                    Incoming::Connected {
                        session_present: a.session_present,
                    }
                }
                Ok(v5::Event::Incoming(
                    v5::mqttbytes::v5::Packet::PubAck(_) | v5::mqttbytes::v5::Packet::PubComp(_),
                )) => {
                    *acked += 1;
                    Incoming::Other
                }
                Ok(_) => Incoming::Other,
                Err(e) => Incoming::Error(e.to_string()),
            },
        }
    }
}

/// Reconnect backoff: 250 ms doubling to 30 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.min(7)).min(30_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_never_show() {
        assert_eq!(
            redact_url("mqtt://ann:s3cret@broker:1883"),
            "mqtt://ann:***@broker:1883"
        );
        assert_eq!(redact_url("mqtts://ann@broker"), "mqtts://ann@broker");
        assert_eq!(
            redact_url("mqtt://broker:1883/x@y"),
            "mqtt://broker:1883/x@y"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        let err = parse_url("mqtt://ann:s3cret@broker:1883").unwrap_err();
        assert!(
            !err.contains("s3cret") && err.contains("ann:***@broker"),
            "{err}"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://localhost:1884").unwrap(),
            ("localhost".into(), 1884, false)
        );
        assert_eq!(
            parse_url("mqtts://broker.plant").unwrap(),
            ("broker.plant".into(), 8883, true)
        );
        assert_eq!(
            parse_url("mqtt://127.0.0.1").unwrap(),
            ("127.0.0.1".into(), 1883, false)
        );
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("mqtt://u:p@x:1").is_err());
        assert!(parse_url("localhost:1883").is_err());
        assert!(parse_url("mqtt://x:99999").is_err());
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "***");
    }
}
