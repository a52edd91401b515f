//! An embedded MQTT broker (rumqttd) with MQTT 3.1.1 and 5 listeners on
//! loopback, for `plantflow broker`, the demo and the tests.
//!
//! rumqttd keeps persistent sessions (clean session / clean start false) and
//! supports `$share/{group}/...` shared subscriptions, so the delivery tests
//! run against it unchanged. Its listeners are bound by port number, so a
//! free port is found first by binding port 0 and releasing it.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

/// A running embedded broker (it lives until the process exits).
#[derive(Clone, Debug)]
pub struct Broker {
    /// Port of the MQTT 3.1.1 listener.
    pub v4_port: u16,
    /// Port of the MQTT 5 listener.
    pub v5_port: u16,
}

impl Broker {
    pub fn url_v4(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.v4_port)
    }
    pub fn url_v5(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.v5_port)
    }
}

/// A currently free loopback TCP port, never the same one twice in this
/// process (parallel tests each start brokers; a port released by one
/// `bind(0)` may be handed out again by the next before its broker binds it).
pub fn free_port() -> std::io::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Hold every candidate until one is new, so the OS cannot repeat itself.
    let mut held = Vec::new();
    for _ in 0..64 {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        if handed.insert(port) {
            return Ok(port);
        }
        held.push(l);
    }
    Err(std::io::Error::other(
        "no fresh loopback port after 64 tries",
    ))
}

fn wait_listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..200 {
        if std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(50)).is_ok()
        {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// Starts a broker; ports 0 pick free ones. Returns once both listeners accept.
pub fn start(v4_port: u16, v5_port: u16) -> Result<Broker, String> {
    let v4_port = if v4_port == 0 {
        free_port().map_err(|e| e.to_string())?
    } else {
        v4_port
    };
    let v5_port = if v5_port == 0 {
        free_port().map_err(|e| e.to_string())?
    } else {
        v5_port
    };
    let listener = |name: &str, port: u16| {
        format!(
            r#"name = "{name}"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[connections]
connection_timeout_ms = 60000
max_payload_size = 16777216
max_inflight_count = 1000
dynamic_filters = true
"#
        )
    };
    let text = format!(
        r#"id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
{}
[v5.1]
{}"#,
        listener("v4-1", v4_port).replace("\n[connections]", "\n[v4.1.connections]"),
        listener("v5-1", v5_port).replace("\n[connections]", "\n[v5.1.connections]"),
    );
    let config: rumqttd::Config =
        toml::from_str(&text).map_err(|e| format!("embedded broker config: {e}"))?;
    std::thread::Builder::new()
        .name("plantflow-broker".into())
        .spawn(move || {
            let mut b = rumqttd::Broker::new(config);
            if let Err(e) = b.start() {
                tracing::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(|e| format!("cannot start the embedded broker: {e}"))?;
    if !wait_listening(v4_port) || !wait_listening(v5_port) {
        return Err(format!(
            "the embedded broker did not listen on ports {v4_port}/{v5_port}"
        ));
    }
    Ok(Broker { v4_port, v5_port })
}
