//! The worker processes as the coordinator sees them: starting them, reading their lines into
//! shared state, choosing how many, and the live progress line built from their counters.

use std::cell::RefCell;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use crate::config::Config;
use crate::procstat::{self, Sample, Watched};
use crate::report_types::{ConnectReport, FinalReport, Progress, WorkerMsg};
use crate::worker::WorkerSetup;

/// What the coordinator knows of one worker process, from its stdout lines.
#[derive(Default)]
pub(crate) struct WorkerState {
    pub(crate) connected: Option<ConnectReport>,
    pub(crate) progress: Progress,
    pub(crate) last: Option<FinalReport>,
    pub(crate) failed: Option<String>,
    pub(crate) exited: bool,
}

/// What the live line shows about the current stage.
#[derive(Default)]
pub(crate) struct Stage {
    pub(crate) text: String,
    pub(crate) phase: Option<usize>,
    pub(crate) expected: Option<u64>,
}

/// State the coordinator's tasks share; they all run on one thread, hence `RefCell`.
pub(crate) struct Shared {
    pub(crate) workers: RefCell<Vec<WorkerState>>,
    pub(crate) stage: RefCell<Stage>,
    pub(crate) started: Instant,
    pub(crate) watched: Vec<Watched>,
    /// This process and its workers, to show what the measuring itself costs.
    pub(crate) own: RefCell<Vec<Watched>>,
}

impl Shared {
    pub(crate) fn received(&self, phase: usize) -> u64 {
        self.workers.borrow().iter().map(|w| w.progress.received.get(phase).copied().unwrap_or(0)).sum()
    }

    pub(crate) fn p99_us(&self, phase: usize) -> u64 {
        self.workers.borrow().iter().map(|w| w.progress.p99_us.get(phase).copied().unwrap_or(0)).max().unwrap_or(0)
    }

    pub(crate) fn ended(&self) -> u64 {
        self.workers.borrow().iter().map(|w| w.progress.ended).sum()
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.workers
            .borrow()
            .iter()
            .enumerate()
            .find_map(|(i, w)| w.failed.as_ref().map(|e| format!("worker {i}: {e}")))
    }
}

/// Descriptors a process may open (soft limit), from /proc/self/limits.
fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(1024)
}

pub(crate) fn worker_count(cfg: &Config) -> usize {
    let per_worker = open_file_limit().saturating_sub(64).max(64);
    let needed = cfg.clients.div_ceil(per_worker);
    if cfg.workers > 0 {
        return cfg.workers.max(needed).min(cfg.clients);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    needed.max(cfg.clients.div_ceil(5000).min(cores)).min(cfg.clients)
}

pub(crate) async fn spawn_worker(
    index: usize,
    setup: &WorkerSetup,
    shared: &Rc<Shared>,
) -> anyhow::Result<(Child, ChildStdin)> {
    let exe = std::env::current_exe().context("locating the loadgen executable")?;
    let mut child = Command::new(exe)
        .arg("--worker")
        .arg(index.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting a worker process")?;
    if let Some(pid) = child.id() {
        shared.own.borrow_mut().push(Watched { label: format!("worker{index}"), pid });
    }
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let line = serde_json::to_string(setup)? + "\n";
    stdin.write_all(line.as_bytes()).await.context("sending the worker its setup")?;
    stdin.flush().await?;
    shared.workers.borrow_mut().push(WorkerState::default());
    let shared = shared.clone();
    tokio::task::spawn_local(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let msg: WorkerMsg = match serde_json::from_str(&line) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("[loadgen] worker {index}: unreadable line ({e})");
                    continue;
                }
            };
            let mut ws = shared.workers.borrow_mut();
            let w = &mut ws[index];
            match msg {
                WorkerMsg::Connected(c) => w.connected = Some(c),
                WorkerMsg::Progress(p) => w.progress = p,
                WorkerMsg::Final(f) => w.last = Some(f),
                WorkerMsg::Failed { error } => w.failed = Some(error),
            }
        }
        shared.workers.borrow_mut()[index].exited = true;
    });
    Ok((child, stdin))
}
/// Prints the live progress line on stderr once per second.
pub(crate) async fn live_line(shared: Rc<Shared>, cfg: Rc<Config>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut prev_total = 0u64;
    let mut prev_cpu: Option<(u64, Instant)> = None;
    loop {
        tick.tick().await;
        let (connected, failed, ended, total, recent_max) = {
            let ws = shared.workers.borrow();
            let p = |f: fn(&Progress) -> u64| ws.iter().map(|w| f(&w.progress)).sum::<u64>();
            (
                p(|p| p.connected),
                p(|p| p.failed),
                p(|p| p.ended),
                p(|p| p.received.iter().sum()),
                ws.iter().map(|w| w.progress.recent_max_us).max().unwrap_or(0),
            )
        };
        let samples: Vec<Sample> = procstat::sample_all(&shared.watched);
        let cpu = procstat::total_cpu_us(&samples);
        let cores = match prev_cpu {
            Some((c, t)) => cpu.saturating_sub(c) as f64 / 1e6 / t.elapsed().as_secs_f64(),
            None => 0.0,
        };
        prev_cpu = Some((cpu, Instant::now()));
        let stage = shared.stage.borrow();
        let phase = match (stage.phase, stage.expected) {
            (Some(i), Some(e)) => format!(" recv {}/{}", shared.received(i), e),
            (Some(i), None) => format!(" recv {}", shared.received(i)),
            _ => String::new(),
        };
        let (start, end) =
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) { ("\r\x1b[2K", "") } else { ("", "\n") };
        eprint!(
            "{start}[loadgen] {:>4.0}s {} | conn {}/{} fail {} ended {} |{} {}/s max {:.1}ms | server {:.2} cores {:.0} MiB{end}",
            shared.started.elapsed().as_secs_f64(),
            stage.text,
            connected,
            cfg.clients,
            failed,
            ended,
            phase,
            total.saturating_sub(prev_total),
            recent_max as f64 / 1000.0,
            cores,
            procstat::total_rss(&samples) as f64 / 1048576.0
        );
        prev_total = total;
    }
}
