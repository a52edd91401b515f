//! The demo's simulated edge: a QoS 1 MQTT publisher, and site 2's
//! utilities as a Sparkplug B edge node (births, then DDATA by alias).

use std::time::Duration;

use rumqttc::{Client, MqttOptions, QoS};

use super::plant::{Plant, Via, SP_GROUP, SP_NODE};
use crate::mqtt::sparkplug::{datatype, Metric, Payload, Value};

/// Publishes batches at QoS 1 from a blocking rumqttc client.
pub struct MqttPublisher {
    client: Client,
}

pub fn host_port(url: &str) -> (String, u16) {
    let rest = url.trim_start_matches("mqtt://");
    let (h, p) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    (
        h.to_string(),
        p.trim_end_matches('/').parse().unwrap_or(1883),
    )
}

impl MqttPublisher {
    pub fn connect(url: &str, id: &str) -> Result<MqttPublisher, String> {
        let (h, p) = host_port(url);
        let mut o = MqttOptions::new(id, h, p);
        o.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(200);
        let (client, mut conn) = Client::new(o, 1000);
        std::thread::Builder::new()
            .name("plantflow-demo-pub".into())
            .spawn(move || {
                for ev in conn.iter() {
                    if let Err(e) = ev {
                        tracing::warn!("demo publisher: {e}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(MqttPublisher { client })
    }

    pub fn publish_all(&self, msgs: &[(String, Vec<u8>)]) -> Result<(), String> {
        for (t, m) in msgs {
            self.client
                .publish(t.as_str(), QoS::AtLeastOnce, false, m.clone())
                .map_err(|e| format!("demo publisher: {e}"))?;
        }
        Ok(())
    }
}

/// The site 2 utilities edge node (Sparkplug B): births, then DDATA by alias.
pub struct SparkplugNode {
    /// (tag index, device, alias)
    metrics: Vec<(usize, String, u64)>,
    seq: u64,
    pub birth_samples: u64,
}

impl SparkplugNode {
    pub fn new(plant: &Plant) -> SparkplugNode {
        let metrics = plant
            .tags
            .iter()
            .enumerate()
            .filter(|(_, t)| t.via == Via::Sparkplug)
            .enumerate()
            .map(|(k, (i, t))| (i, t.asset.to_string(), k as u64 + 1))
            .collect();
        SparkplugNode {
            metrics,
            seq: 0,
            birth_samples: 0,
        }
    }

    pub fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = (self.seq + 1) % 256;
        s
    }

    pub fn metric(alias: u64, name: Option<&str>, t: i64, v: f64) -> Metric {
        Metric {
            name: name.map(str::to_string),
            alias: Some(alias),
            timestamp: Some(t as u64),
            datatype: Some(datatype::DOUBLE),
            value: Some(Value::DoubleValue(v)),
            ..Default::default()
        }
    }

    pub fn births(&mut self, t: i64, v: &[f64]) -> Vec<(String, Vec<u8>)> {
        use prost::Message;
        let mut out = Vec::new();
        let nbirth = Payload {
            timestamp: Some(t as u64),
            seq: Some(self.next_seq()),
            metrics: vec![Metric {
                name: Some("bdSeq".into()),
                timestamp: Some(t as u64),
                datatype: Some(datatype::UINT64),
                value: Some(Value::LongValue(0)),
                ..Default::default()
            }],
            ..Default::default()
        };
        out.push((
            format!("spBv1.0/{SP_GROUP}/NBIRTH/{SP_NODE}"),
            nbirth.encode_to_vec(),
        ));
        for (i, device, alias) in self.metrics.clone() {
            let p = Payload {
                timestamp: Some(t as u64),
                seq: Some(self.next_seq()),
                metrics: vec![Self::metric(alias, Some("power_kw"), t, v[i])],
                ..Default::default()
            };
            self.birth_samples += 1;
            out.push((
                format!("spBv1.0/{SP_GROUP}/DBIRTH/{SP_NODE}/{device}"),
                p.encode_to_vec(),
            ));
        }
        out
    }

    pub fn data(&mut self, t: i64, v: &[f64]) -> Vec<(String, Vec<u8>)> {
        use prost::Message;
        let mut out = Vec::new();
        for (i, device, alias) in self.metrics.clone() {
            let p = Payload {
                timestamp: Some(t as u64),
                seq: Some(self.next_seq()),
                metrics: vec![Self::metric(alias, None, t, v[i])],
                ..Default::default()
            };
            out.push((
                format!("spBv1.0/{SP_GROUP}/DDATA/{SP_NODE}/{device}"),
                p.encode_to_vec(),
            ));
        }
        out
    }
}
