//! Running a dataflow from your own Rust program instead of the CLI.
//!
//! ```text
//! INPUT_DIR=tests/fixtures/workload_v1_small OUT_DIR=/tmp/out \
//!   cargo run --example embed -- dataflows/workload_v1.toml
//! ```

use std::path::PathBuf;

fn main() {
    let file = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "dataflows/workload_v1.toml".into()),
    );
    let plan = match plantflow::dataflow::load(&file) {
        Ok(plan) => plan,
        Err(errors) => {
            eprintln!("{}", errors.render());
            std::process::exit(plantflow::EXIT_CONFIG);
        }
    };
    let currency = plan.currency.clone();
    let options = plantflow::run::RunOptions {
        workers: 2,
        ..Default::default()
    };
    match plantflow::run::run(plan, options) {
        Ok(summary) => {
            print!("{}", summary.render(&currency));
            for (action, revision) in summary.report.actions.values() {
                println!(
                    "{} {} {} {:.2} {currency} (revision {revision})",
                    action.action_id, action.owner, action.asset, action.value.0
                );
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
