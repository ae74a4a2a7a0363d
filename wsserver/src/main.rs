//! wsserver binary: parse the configuration, set up logging, open the listeners (or take them
//! from the previous process of a live hand-off), and `run`.

use anyhow::Context;
use clap::Parser;
use service::listen::Spec;

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
    let handoff = crier_wsserver::handoff::take::Taking::connect().await.context("live hand-off")?;
    let (listeners, take) = match handoff {
        Some((taking, received)) => {
            (crier_wsserver::Listeners { websocket: received.websocket, admin: received.admin }, Some(taking))
        }
        None => {
            let unix = config.unix_options();
            let admin_addr = config.admin_listen.into();
            let specs = [
                Spec { name: "listen", addr: Some(&config.listen), unix: &unix },
                Spec { name: "admin-listen", addr: Some(&admin_addr), unix: &unix },
            ];
            let [websocket, admin]: [Vec<_>; 2] =
                service::listen::open(&specs).context("--listen/--admin-listen")?.try_into().expect("one per spec");
            (crier_wsserver::Listeners { websocket, admin }, None)
        }
    };
    let handoff = crier_wsserver::Handoff { take, give_on_sigusr2: true };
    crier_wsserver::run_with(config, listeners, service::shutdown_signal(), handoff).await?;
    Ok(())
}
