//! webserver binary: parse the configuration, set up logging and the runtime, then either run
//! a `users` subcommand or open the listeners and `run`.

use anyhow::Context;
use clap::Parser;
use crier_webserver::{Command, Config};
use service::listen::Spec;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("webserver: invalid configuration: {e}");
        std::process::exit(2);
    }
    if config.check {
        println!("{}", config.describe());
        match service::redis_check::check(&config.redis) {
            Ok(note) => println!("{note}"),
            Err(e) => {
                eprintln!("webserver: {e}");
                std::process::exit(2);
            }
        }
        println!("configuration OK");
        return Ok(());
    }
    service::init_logging(config.log_format);
    let runtime = service::runtime::build(config.threads).context("cannot start the runtime (--threads)")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if let Some(Command::Users(users)) = &config.command {
        match crier_webserver::users_cli::run(&config, users).await {
            Ok(out) => {
                if !out.is_empty() {
                    println!("{out}");
                }
                return Ok(());
            }
            Err(e) => {
                eprintln!("webserver users: {e}");
                std::process::exit(1);
            }
        }
    }
    let unix = config.unix_options();
    let admin_addr = config.admin_addr();
    let specs = [
        Spec { name: "listen", addr: Some(&config.listen), unix: &unix },
        Spec { name: "admin-listen", addr: admin_addr.as_ref(), unix: &unix },
    ];
    let [listeners, admin]: [Vec<_>; 2] =
        service::listen::open(&specs).context("--listen/--admin-listen")?.try_into().expect("one per spec");
    crier_webserver::run_with_admin(config, listeners, admin, service::shutdown_signal()).await?;
    Ok(())
}
