//! The tokio runtime a binary runs on, from its thread setting: one thread (the current-thread
//! scheduler, no hand-offs between threads) or a work-stealing pool.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// Most runtime threads a setting may ask for.
pub const MAX_THREADS: usize = 256;

/// `threads` = 1: one thread; 0: a pool with one worker per CPU (or `TOKIO_WORKER_THREADS`);
/// n: a pool of n workers.
pub fn build(threads: usize) -> io::Result<Runtime> {
    let mut builder = match threads {
        1 => Builder::new_current_thread(),
        0 => Builder::new_multi_thread(),
        n => {
            let mut b = Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_runs_on_the_calling_thread_and_pools_run_tasks() {
        let caller = std::thread::current().id();
        let single = build(1).expect("current-thread runtime");
        assert_eq!(single.block_on(async { std::thread::current().id() }), caller);
        assert_eq!(single.metrics().num_workers(), 1);
        let pool = build(3).expect("pool");
        assert_eq!(pool.metrics().num_workers(), 3);
        assert_eq!(pool.block_on(async { tokio::spawn(async { 7 }).await.expect("task") }), 7);
    }
}
