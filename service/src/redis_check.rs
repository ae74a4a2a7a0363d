//! What `--check` says about Redis: the settings parse and their files load (as at startup),
//! and one connection is tried. Certificate and credential failures fail the check; Redis being
//! down does not (the servers start without it and connect when it comes).

use crate::redis_config::RedisArgs;
use crate::redis_target::ProbeError;

/// A line for the operator when Redis answered or is only unavailable now; the reason when the
/// settings cannot work. Runs its own small runtime on a helper thread, so it may be called from
/// synchronous or asynchronous code.
pub fn check(args: &RedisArgs) -> Result<String, String> {
    let target = args.target().map_err(|e| e.to_string())?;
    let probe = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        match runtime {
            Ok(runtime) => runtime.block_on(target.probe()),
            Err(e) => Err(ProbeError::Unavailable(format!("cannot start a runtime: {e}"))),
        }
    });
    match probe.join() {
        Ok(Ok(())) => Ok("redis: reachable".to_owned()),
        Ok(Err(ProbeError::Unavailable(why))) => Ok(format!("redis: not reachable now ({why}); the server retries")),
        Ok(Err(ProbeError::Fatal(why))) => Err(format!("redis: {why}")),
        Err(_) => Err("redis: the check panicked".to_owned()),
    }
}

/// The startup check of both binaries: `Err` (refuse to start) for certificate and credential
/// failures; Redis merely down is logged and left to the reconnect policy.
pub async fn at_startup(target: &crate::redis_target::RedisTarget) -> Result<(), String> {
    match target.probe().await {
        Ok(()) => Ok(()),
        Err(ProbeError::Unavailable(why)) => {
            tracing::warn!("redis not reachable at startup ({why}); retrying in the background");
            Ok(())
        }
        Err(ProbeError::Fatal(why)) => Err(why),
    }
}
