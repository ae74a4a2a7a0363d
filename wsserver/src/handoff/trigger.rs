//! The trigger of a live hand-off: SIGUSR2 (what `systemctl reload` sends) starts a new
//! process ([`Successor::start`]) and hands it, once ready, to [`crate::server`]'s accept loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use service::listen::Listener;
use tokio::sync::mpsc;

use super::give::Successor;
use super::link::Role;

/// Hand-off requests: new processes, ready ([`requests`]).
pub struct Requests {
    pub successors: mpsc::Receiver<Successor>,
    /// Set while a hand-off runs; cleared by the caller when one is abandoned.
    pub busy: Arc<std::sync::atomic::AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Requests {
    /// Stops listening for SIGUSR2 and closes the copies of the listeners kept for new
    /// processes (a unix socket's file is only removed once nothing listens on it).
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Starts a new process on each SIGUSR2 (when `enabled`) and yields it once ready; signals
/// while one hand-off runs are ignored. `listeners` are passed to each new process. With
/// `refusal` set, each SIGUSR2 is answered with that reason in the log and nothing else (the
/// signal is still caught: its default action would end the process).
pub fn requests(enabled: bool, refusal: Option<&'static str>, listeners: Vec<(Role, Listener)>) -> Requests {
    let (tx, successors) = mpsc::channel(1);
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let idle = |successors, busy| Requests { successors, busy, task: None };
    if !enabled {
        return idle(successors, busy);
    }
    let mut signals = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGUSR2 (live hand-off): {e}");
            return idle(successors, busy);
        }
    };
    let flag = busy.clone();
    let task = tokio::spawn(async move {
        while signals.recv().await.is_some() {
            if let Some(reason) = refusal {
                tracing::error!(
                    "SIGUSR2 ignored: no live hand-off {reason}; restart instead (clients reconnect and recover)"
                );
                continue;
            }
            if flag.swap(true, Ordering::SeqCst) {
                tracing::warn!("SIGUSR2 ignored: a live hand-off is already running");
                continue;
            }
            tracing::info!("SIGUSR2 received: starting a live hand-off");
            match Successor::start(&listeners).await {
                Ok(successor) => {
                    if tx.send(successor).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("live hand-off not started: {e}; this process keeps serving");
                    flag.store(false, Ordering::SeqCst);
                }
            }
        }
    });
    Requests { successors, busy, task: Some(task) }
}
