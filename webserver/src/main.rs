//! webserver binary: parse the configuration, set up logging and the runtime, then either run
//! a `users` subcommand or bind and `run`.

use anyhow::Context;
use clap::Parser;
use crier_webserver::{Command, Config};

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
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let admin = if config.admin_listen.is_empty() {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(config.admin_listen.as_str())
                .await
                .with_context(|| format!("cannot listen on {} (--admin-listen)", config.admin_listen))?,
        )
    };
    crier_webserver::run_with_admin(config, listener, admin, service::shutdown_signal()).await?;
    Ok(())
}
