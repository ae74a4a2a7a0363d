//! loadgen: many websocket subscribers against Crier (or Nchan), rate-controlled publishing,
//! and a report of deliveries, loss, reordering, latency and the server's cost. See
//! loadgen/README.md.
//!
//! One process coordinates (publishes, samples the server, aggregates, reports); it re-executes
//! itself as worker processes that hold the sockets, so that no process needs more descriptors
//! than its limit allows.

mod client;
mod config;
mod coordinator;
mod fleet;
mod histogram;
mod message;
mod phases;
mod procstat;
mod publisher;
mod report_types;
mod search;
mod sessions;
mod summary;
mod svg;
mod worker;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let mut config = config::Config::parse();
    if config.worker.is_some() {
        return worker::main();
    }
    if let Err(e) = config.validate() {
        eprintln!("loadgen: {e}");
        std::process::exit(2);
    }
    let summary = coordinator::main(config)?;
    std::process::exit(if summary.aborted.is_some() { 1 } else { 0 });
}
