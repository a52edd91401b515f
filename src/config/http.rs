//! `[http]`: the node's HTTP surface for operators (health, readiness,
//! Prometheus metrics), off unless configured.

use serde::Deserialize;

use super::loader::Loader;

/// A validated `[http]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpPlan {
    /// Where the server listens (`127.0.0.1:9464`; port 0: any free port).
    pub listen: std::net::SocketAddr,
}

#[derive(Deserialize, Debug)]
struct RawHttp {
    listen: String,
}

/// Validates `[http]`: `listen`, an address and port.
pub(super) fn http(l: &mut Loader<'_>, raw: Option<toml::Value>) -> Option<HttpPlan> {
    let h: RawHttp = l.de("http", raw?, &["listen"])?;
    match h.listen.parse() {
        Ok(listen) => Some(HttpPlan { listen }),
        Err(e) => {
            l.at_value(
                "http.listen",
                format!("`{}` is not an address and port: {e}", h.listen),
                Some(
                    "e.g. `listen = \"127.0.0.1:9464\"` (or `0.0.0.0:9464` for every interface)"
                        .into(),
                ),
            );
            None
        }
    }
}
