//! `[http]`: the node's HTTP surface for operators (health, readiness,
//! Prometheus metrics, the actions API and board), off unless configured.

use serde::Deserialize;

use super::loader::Loader;
use crate::model::Secret;

/// The shortest bearer token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// A validated `[http]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpPlan {
    /// Where the server listens (`127.0.0.1:9464`; port 0: any free port).
    pub listen: std::net::SocketAddr,
    /// The bearer token the write endpoints require (from `token_env` or
    /// `token_file`); without one they are off.
    pub token: Option<Secret>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawHttp {
    listen: String,
    token_env: Option<String>,
    token_file: Option<String>,
}

/// Validates `[http]`: `listen`, an address and port, and where its token
/// comes from. Listening beyond loopback needs a token.
pub(super) fn http(
    l: &mut Loader<'_>,
    raw: Option<toml::Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<HttpPlan> {
    let h: RawHttp = l.de("http", raw?, &["listen", "token_env", "token_file"])?;
    let token = token(l, &h, env);
    let listen: std::net::SocketAddr = match h.listen.parse() {
        Ok(listen) => listen,
        Err(e) => {
            l.at_value(
                "http.listen",
                format!("`{}` is not an address and port: {e}", h.listen),
                Some(
                    "e.g. `listen = \"127.0.0.1:9464\"` (or `0.0.0.0:9464` for every interface)"
                        .into(),
                ),
            );
            return None;
        }
    };
    if !listen.ip().is_loopback() && token.is_none() {
        l.at_value(
            "http.listen",
            format!(
                "`{listen}` is reachable beyond this machine, and the actions API would take \
                 writes without a token"
            ),
            Some("set `token_env` or `token_file` (a secret of 16 or more characters), or listen on `127.0.0.1`".into()),
        );
    }
    Some(HttpPlan { listen, token })
}

/// The token from `token_env` or `token_file` (one of them), checked.
fn token(l: &mut Loader<'_>, h: &RawHttp, env: &dyn Fn(&str) -> Option<String>) -> Option<Secret> {
    let (key, text) = match (&h.token_env, &h.token_file) {
        (Some(_), Some(_)) => {
            l.at(
                "http.token_file",
                "give the token by `token_env` or by `token_file`, not both".into(),
                None,
            );
            return None;
        }
        (Some(var), None) => match env(var) {
            Some(v) => ("http.token_env", v),
            None => {
                l.at_value(
                    "http.token_env",
                    format!("environment variable `{var}` is not set"),
                    None,
                );
                return None;
            }
        },
        (None, Some(f)) => {
            let p = l.file_exists("http.token_file", f);
            match std::fs::read_to_string(&p) {
                Ok(s) => ("http.token_file", s),
                Err(_) => return None,
            }
        }
        (None, None) => return None,
    };
    let t = text.trim();
    if t.len() < MIN_TOKEN_LEN || t.chars().any(|c| !c.is_ascii_graphic()) {
        // Never the token itself in the message.
        l.at_value(
            key,
            format!(
                "the token must be {MIN_TOKEN_LEN} or more printable characters without spaces \
                 (it has {})",
                t.chars().count()
            ),
            Some("e.g. `openssl rand -hex 24`".into()),
        );
        return None;
    }
    Some(Secret(t.to_string()))
}
