//! Connecting: client identity and PKI, endpoint selection by security
//! policy and mode, user tokens, and the errors a user can act on.
//!
//! The client's own certificate and key live in `pki_dir/own` and
//! `pki_dir/private` and are created on first run. Server certificates are
//! trusted explicitly: a new server's certificate lands in
//! `pki_dir/rejected/` and the error says which file to move to
//! `pki_dir/trusted/`. `trust_server_certs = true` trusts any server (with a
//! loud warning); it is off by default.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opcua::client::{Client, ClientBuilder, IdentityToken, Session, SessionEventLoop};
use opcua::crypto::SecurityPolicy;
use opcua::types::{EndpointDescription, MessageSecurityMode, StatusCode};

use crate::model::Secret;

/// Who the session logs in as.
#[derive(Clone, Debug)]
pub enum Identity {
    Anonymous,
    UserName { user: String, password: Secret },
    X509 { cert: PathBuf, key: PathBuf },
}

/// Connection settings of an `opcua` source.
#[derive(Clone, Debug)]
pub struct ConnPlan {
    pub endpoint: String,
    pub policy: SecurityPolicy,
    pub mode: MessageSecurityMode,
    pub identity: Identity,
    pub pki_dir: PathBuf,
    pub trust_server_certs: bool,
    pub application_name: String,
    pub application_uri: String,
    pub session_timeout_ms: u32,
    pub keep_alive_ms: u64,
    pub request_timeout_ms: u64,
}

/// Security policy names accepted in config (and their URIs' fragments).
pub const POLICIES: &[&str] = &[
    "None",
    "Basic256Sha256",
    "Aes128_Sha256_RsaOaep",
    "Aes256_Sha256_RsaPss",
];

pub fn policy(name: &str) -> Option<SecurityPolicy> {
    match name {
        "None" => Some(SecurityPolicy::None),
        "Basic256Sha256" => Some(SecurityPolicy::Basic256Sha256),
        "Aes128_Sha256_RsaOaep" => Some(SecurityPolicy::Aes128Sha256RsaOaep),
        "Aes256_Sha256_RsaPss" => Some(SecurityPolicy::Aes256Sha256RsaPss),
        _ => None,
    }
}

pub const MODES: &[&str] = &["None", "Sign", "SignAndEncrypt"];

pub fn mode(name: &str) -> Option<MessageSecurityMode> {
    match name {
        "None" => Some(MessageSecurityMode::None),
        "Sign" => Some(MessageSecurityMode::Sign),
        "SignAndEncrypt" => Some(MessageSecurityMode::SignAndEncrypt),
        _ => None,
    }
}

/// Builds the client (creates its key pair in the PKI directory if missing).
pub fn client(plan: &ConnPlan) -> Result<Client, String> {
    if plan.trust_server_certs {
        tracing::warn!(
            endpoint = %plan.endpoint,
            "trust_server_certs = true: ANY server certificate is accepted; \
             anyone who can reach this network path can impersonate the server"
        );
    }
    private_dirs(&plan.pki_dir)
        .map_err(|e| format!("PKI directory {}: {e}", plan.pki_dir.display()))?;
    let client = ClientBuilder::new()
        .application_name(&plan.application_name)
        .application_uri(&plan.application_uri)
        .product_uri("urn:plantflow")
        .create_sample_keypair(true)
        .pki_dir(&plan.pki_dir)
        .trust_server_certs(plan.trust_server_certs)
        .verify_server_certs(true)
        .session_retry_limit(-1)
        .session_retry_initial(Duration::from_millis(250))
        .session_retry_max(Duration::from_secs(10))
        .session_timeout(plan.session_timeout_ms)
        .keep_alive_interval(Duration::from_millis(plan.keep_alive_ms))
        .max_failed_keep_alive_count(3)
        .request_timeout(Duration::from_millis(plan.request_timeout_ms))
        // Large publishes: the default array limit (1000) silently stops data
        // once a publish carries more notifications than that.
        .max_array_length(10_000_000)
        .max_message_size(512 << 20)
        .max_chunk_count(8192)
        .recreate_subscriptions(true)
        .session_name("plantflow")
        .client()
        .map_err(|e| format!("OPC UA client configuration: {}", e.join("; ")))?;
    // The client's private key (created just now on a first run) is the
    // owner's alone.
    private_files(&plan.pki_dir.join("private"))
        .map_err(|e| format!("PKI directory {}: {e}", plan.pki_dir.display()))?;
    Ok(client)
}

/// Creates the PKI directory and its `private/` readable by the owner only
/// (0700), so the key is never readable by others, even before it is 0600.
fn private_dirs(pki: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(pki)?;
    let private = pki.join("private");
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !private.exists() {
            std::fs::DirBuilder::new().mode(0o700).create(&private)?;
        }
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(&private)?;
    Ok(())
}

/// Makes every file in `dir` readable by its owner only (0600).
fn private_files(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    for e in std::fs::read_dir(dir)? {
        use std::os::unix::fs::PermissionsExt;
        let p = e?.path();
        if p.is_file() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn token(id: &Identity) -> Result<IdentityToken, String> {
    Ok(match id {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::UserName { user, password } => {
            IdentityToken::UserName(user.clone(), password.0.clone().into())
        }
        Identity::X509 { cert, key } => IdentityToken::new_x509_path(cert, key)
            .map_err(|e| format!("user certificate {}: {e}", cert.display()))?,
    })
}

fn describe(e: &EndpointDescription) -> String {
    let policy = e
        .security_policy_uri
        .as_ref()
        .rsplit('#')
        .next()
        .unwrap_or("?")
        .to_string();
    format!("{policy}/{:?}", e.security_mode)
}

/// Asks the server for its endpoints and opens a session on the one that
/// matches the configured policy and mode. Errors say what to change.
pub async fn connect(
    client: &mut Client,
    plan: &ConnPlan,
) -> Result<
    (
        Arc<Session>,
        SessionEventLoop<opcua::client::transport::TcpConnector>,
    ),
    (StatusCode, String),
> {
    let endpoints = client
        .get_server_endpoints_from_url(plan.endpoint.as_str())
        .await
        .map_err(|e| (e.status(), explain(plan, e.status(), &e.to_string())))?;
    let Some(ep) =
        Client::find_matching_endpoint(&endpoints, &plan.endpoint, plan.policy, plan.mode)
    else {
        let offered: Vec<String> = endpoints.iter().map(describe).collect();
        return Err((
            StatusCode::BadSecurityPolicyRejected,
            format!(
                "the server at {} offers no {}/{:?} endpoint (it offers: {}); \
             set `security_policy`/`security_mode` to one of those",
                plan.endpoint,
                plan.policy.to_str(),
                plan.mode,
                offered.join(", ")
            ),
        ));
    };
    let tok = token(&plan.identity).map_err(|e| (StatusCode::BadIdentityTokenInvalid, e))?;
    client
        .connect_to_endpoint_directly(ep, tok)
        .map_err(|e| (e.status(), explain(plan, e.status(), &e.to_string())))
}

/// Turns a status into advice where there is one.
pub fn explain(plan: &ConnPlan, status: StatusCode, detail: &str) -> String {
    let pki = plan.pki_dir.display();
    let advice = if status == StatusCode::BadCertificateUntrusted
        || status == StatusCode::BadSecurityChecksFailed
        || status == StatusCode::BadCertificateInvalid
    {
        format!(
            " — the server's certificate is not trusted yet: move it from {pki}/rejected/ to \
             {pki}/trusted/ (or set `trust_server_certs = true` to trust any server); if the \
             server rejected ours, trust {pki}/own/cert.der on the server"
        )
    } else if status == StatusCode::BadUserAccessDenied
        || status == StatusCode::BadIdentityTokenInvalid
        || status == StatusCode::BadIdentityTokenRejected
    {
        " — the server refused the user; check `username`/`password_env`".to_string()
    } else if status == StatusCode::BadTcpEndpointUrlInvalid
        || status == StatusCode::BadNotConnected
        || status == StatusCode::BadCommunicationError
        || status == StatusCode::BadConnectionClosed
    {
        " — is the server running and the endpoint URL right?".to_string()
    } else {
        String::new()
    };
    format!("OPC UA {}: {detail}{advice}", plan.endpoint)
}
