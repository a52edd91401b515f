//! `plantflow sim-opcua`: the OPC UA simulator's command.

/// Serves the workload's tags in `input` as an OPC UA server on `port`,
/// writes its samples at `speed` after `delay` seconds, and serves until
/// SIGINT/SIGTERM.
pub fn main(
    input: &std::path::Path,
    port: u16,
    speed: f64,
    delay: u64,
    user: Option<String>,
    pki: std::path::PathBuf,
) -> std::process::ExitCode {
    use super::opcua::{replay_csv, sleep_until, PlantServer, ServerOptions, SimTag};
    let assets = match std::fs::read_to_string(input.join("assets.csv")) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("plantflow: {}: {e}", input.join("assets.csv").display());
            return std::process::ExitCode::from(66);
        }
    };
    let tags: Vec<String> = assets
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    let users: Vec<(String, String)> = user
        .iter()
        .filter_map(|u| u.split_once(':'))
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .collect();
    let server = match PlantServer::start(ServerOptions {
        port,
        tags: tags.iter().map(|t| SimTag::new(t, "kW", 1000.0)).collect(),
        anonymous: users.is_empty(),
        users,
        pki_dir: pki,
        ..Default::default()
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("plantflow: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    println!(
        "OPC UA simulator on {} ({} variables under Objects/Plant; None, Basic256Sha256, \
         Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss)",
        server.url(),
        tags.len()
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let s = stop.clone();
        let _ = ctrlc_like(s);
    }
    sleep_until(
        std::time::Instant::now() + std::time::Duration::from_secs(delay),
        &stop,
    );
    match replay_csv(&server, &tags, &input.join("samples.csv"), speed, &stop) {
        Ok(n) => println!("wrote {n} values; serving until Ctrl-C"),
        Err(e) => {
            eprintln!("plantflow: {e}");
            return std::process::ExitCode::from(1);
        }
    }
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    server.stop();
    std::process::ExitCode::SUCCESS
}

/// Sets `stop` on SIGINT/SIGTERM (on a small tokio runtime).
fn ctrlc_like(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut i), Ok(mut t)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! { _ = i.recv() => {}, _ = t.recv() => {} }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    });
    Ok(())
}
