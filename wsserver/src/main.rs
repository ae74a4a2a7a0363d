//! wsserver binary: parse the configuration, set up logging, bind, and `run`.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = crier_wsserver::Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("wsserver: invalid configuration: {e}");
        std::process::exit(2);
    }
    if config.check {
        println!("{}", config.describe());
        match service::redis_check::check(&config.redis) {
            Ok(note) => println!("{note}"),
            Err(e) => {
                eprintln!("wsserver: {e}");
                std::process::exit(2);
            }
        }
        println!("configuration OK");
        return Ok(());
    }
    service::init_logging(config.log_format);
    let websocket = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--admin-listen)", config.admin_listen))?;
    crier_wsserver::run(config, crier_wsserver::Listeners { websocket, admin }, service::shutdown_signal()).await?;
    Ok(())
}
