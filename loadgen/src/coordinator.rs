//! The coordinating process: writes sessions if needed, starts the worker processes, waits for
//! their connections, runs the phases (publish, drain, judge), samples the server, prints the
//! live line, and merges everything into the summary, chart and JSON.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use crate::config::{Config, PublishVia};
use crate::histogram::{Histogram, FINE_BITS};
use crate::message;
use crate::procstat::{self, Sample, Watched};
use crate::publisher::Publisher;
use crate::report_types::{ConnectReport, FinalReport, Progress, WorkerMsg};
use crate::summary::{Connections, IdleResult, Latency, PhaseResult, ServerProcess, Summary};
use crate::worker::WorkerSetup;

/// A phase's deliveries count as complete when none arrived for this long.
const QUIET_FOR: Duration = Duration::from_millis(1500);
/// How long workers get to send their final report.
const FINAL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct WorkerState {
    connected: Option<ConnectReport>,
    progress: Progress,
    last: Option<FinalReport>,
    failed: Option<String>,
    exited: bool,
}

/// What the live line shows about the current stage.
#[derive(Default)]
struct Stage {
    text: String,
    phase: Option<usize>,
    expected: Option<u64>,
}

struct Shared {
    workers: RefCell<Vec<WorkerState>>,
    stage: RefCell<Stage>,
    started: Instant,
    watched: Vec<Watched>,
    /// This process and its workers, to show what the measuring itself costs.
    own: RefCell<Vec<Watched>>,
}

impl Shared {
    fn received(&self, phase: usize) -> u64 {
        self.workers.borrow().iter().map(|w| w.progress.received.get(phase).copied().unwrap_or(0)).sum()
    }

    fn p99_us(&self, phase: usize) -> u64 {
        self.workers.borrow().iter().map(|w| w.progress.p99_us.get(phase).copied().unwrap_or(0)).max().unwrap_or(0)
    }

    fn ended(&self) -> u64 {
        self.workers.borrow().iter().map(|w| w.progress.ended).sum()
    }

    fn failure(&self) -> Option<String> {
        self.workers.borrow().iter().enumerate().find_map(|(i, w)| w.failed.as_ref().map(|e| format!("worker {i}: {e}")))
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

fn worker_count(cfg: &Config) -> usize {
    let per_worker = open_file_limit().saturating_sub(64).max(64);
    let needed = cfg.clients.div_ceil(per_worker);
    if cfg.workers > 0 {
        return cfg.workers.max(needed).min(cfg.clients);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    needed.max(cfg.clients.div_ceil(5000).min(cores)).min(cfg.clients)
}

pub fn main(cfg: Config) -> anyhow::Result<Summary> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(cfg))
}

async fn run(cfg: Config) -> anyhow::Result<Summary> {
    let cfg = Rc::new(cfg);
    let watched: Vec<Watched> = cfg
        .server_pid
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| procstat::parse_watched(s))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    for w in &watched {
        if procstat::sample(w.pid).is_none() {
            anyhow::bail!("--server-pid {}={}: no such process", w.label, w.pid);
        }
    }
    let started = Instant::now();
    let deadline = started + cfg.effective_deadline();
    let run_id = format!("{:x}", message::now_us());
    if cfg.audience == crate::config::Audience::User {
        crate::sessions::write_sessions(&cfg, &run_id).await?;
    }
    let publisher = Publisher::new(cfg.clone()).await?;
    let before = procstat::sample_all(&watched);
    let pss_before = if cfg.idle.is_some() { procstat::total_pss(&watched) } else { 0 };

    let shared = Rc::new(Shared {
        workers: RefCell::new(Vec::new()),
        stage: RefCell::new(Stage { text: "connecting".into(), ..Stage::default() }),
        started,
        watched: watched.clone(),
        own: RefCell::new(vec![Watched { label: "loadgen".into(), pid: std::process::id() }]),
    });
    let count = worker_count(&cfg);
    let mut children = Vec::new();
    for w in 0..count {
        let first = cfg.clients * w / count;
        let end = cfg.clients * (w + 1) / count;
        let setup = WorkerSetup { config: (*cfg).clone(), worker_count: count, first, end, run_id: run_id.clone() };
        children.push(spawn_worker(w, &setup, &shared).await?);
    }
    if !cfg.quiet {
        tokio::task::spawn_local(live_line(shared.clone(), cfg.clone()));
    }

    let mut aborted = None;
    // Connect stage.
    let connect_deadline = Instant::now() + cfg.connect_budget() + cfg.connect_timeout + Duration::from_secs(5);
    loop {
        let (all, failure) = {
            let ws = shared.workers.borrow();
            (ws.iter().all(|w| w.connected.is_some() || w.exited), shared.failure())
        };
        if let Some(f) = failure {
            aborted = Some(f);
            break;
        }
        if all {
            break;
        }
        if Instant::now() > connect_deadline.min(deadline) {
            aborted = Some("connect stage overran its budget".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_reports: Vec<ConnectReport> = shared.workers.borrow().iter().filter_map(|w| w.connected.clone()).collect();
    let mut connections = Connections::default();
    let mut subscribers = vec![0u64; cfg.channels];
    let mut errors: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for r in &connect_reports {
        connections.attempted += r.attempted;
        connections.connected += r.connected;
        connections.failed += r.failed;
        connections.connect_seconds = connections.connect_seconds.max(r.seconds);
        for (ch, n) in &r.subscribers {
            if let Some(s) = subscribers.get_mut(*ch as usize) {
                *s += u64::from(*n);
            }
        }
        for (kind, n, example) in &r.errors {
            errors.entry(kind.clone()).or_insert((0, example.clone())).0 += n;
        }
    }
    connections.errors = errors.into_iter().map(|(k, (n, e))| (k, n, e)).collect();
    connections.connects_per_sec = connections.connected as f64 / connections.connect_seconds.max(1e-3);
    let ended_at_connect = shared.ended();

    let mut phases = Vec::new();
    let mut idle = None;
    if aborted.is_none() {
        if let Some(hold) = cfg.idle {
            let cpu0 = procstat::sample_all(&watched);
            shared.stage.borrow_mut().text = "idle".into();
            let t0 = Instant::now();
            tokio::time::sleep_until((t0 + hold).min(deadline).into()).await;
            let after = procstat::sample_all(&watched);
            let pss_after = procstat::total_pss(&watched);
            let sockets = connections.connected.saturating_sub(shared.ended());
            let (rb, ra) = (procstat::total_rss(&before), procstat::total_rss(&after));
            idle = Some(IdleResult {
                sockets,
                held_seconds: t0.elapsed().as_secs_f64(),
                rss_before: rb,
                rss_after: ra,
                rss_bytes_per_socket: (sockets > 0).then(|| (ra as f64 - rb as f64) / sockets as f64),
                pss_before,
                pss_after,
                pss_bytes_per_socket: (sockets > 0 && pss_after > 0).then(|| (pss_after as f64 - pss_before as f64) / sockets as f64),
                cpu_us_while_idle: procstat::total_cpu_us(&after).saturating_sub(procstat::total_cpu_us(&cpu0)),
            });
        }
        if cfg.publish != PublishVia::None {
            phases = run_phases(&cfg, &publisher, &shared, &subscribers, deadline, &mut aborted).await;
        }
    }

    // Finish: ask for final reports, then merge.
    shared.stage.borrow_mut().text = "collecting".into();
    for (_, stdin) in children.iter_mut() {
        let _ = stdin.write_all(b"finish\n").await;
        let _ = stdin.flush().await;
    }
    let final_deadline = Instant::now() + FINAL_TIMEOUT;
    loop {
        let done = shared.workers.borrow().iter().all(|w| w.last.is_some() || w.exited);
        if done || Instant::now() > final_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (child, _) in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
            let _ = child.start_kill();
        }
    }
    let after = procstat::sample_all(&watched);
    let finals: Vec<FinalReport> = shared.workers.borrow().iter().filter_map(|w| w.last.clone()).collect();
    if finals.len() < count && aborted.is_none() {
        aborted = Some(format!("{} of {count} workers sent no final report", count - finals.len()));
    }
    let mut ended_kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut seconds: BTreeMap<u64, Histogram> = BTreeMap::new();
    let mut all = Histogram::new(FINE_BITS);
    for f in &finals {
        connections.ended_during_run += f.ended;
        for (k, n) in &f.ended_kinds {
            *ended_kinds.entry(k.clone()).or_default() += n;
        }
        for (sec, h) in &f.seconds {
            match seconds.get_mut(sec) {
                Some(m) => m.merge(h),
                None => {
                    seconds.insert(*sec, h.clone());
                }
            }
        }
    }
    connections.ended_kinds = ended_kinds.into_iter().collect();
    let _ = ended_at_connect;
    // Exact per-phase counts and latency from the final reports.
    for p in phases.iter_mut() {
        let i = p.phase as usize;
        let mut h = Histogram::new(FINE_BITS);
        let (mut received, mut reordered, mut duplicates, mut last_us) = (0, 0, 0, 0);
        for f in &finals {
            if let Some(c) = f.phases.get(i) {
                received += c.received;
                reordered += c.reordered;
                duplicates += c.duplicates;
                last_us = last_us.max(c.last_us);
                if let Some(l) = &c.latency {
                    h.merge(l);
                }
            }
        }
        if finals.len() == count {
            p.received = received;
        }
        p.reordered = reordered;
        p.duplicates = duplicates;
        p.lost = p.expected.saturating_sub(p.received);
        p.loss_pct = if p.expected > 0 { p.lost as f64 * 100.0 / p.expected as f64 } else { 0.0 };
        if last_us > p.start_us {
            p.deliveries_per_sec = p.received as f64 / ((last_us - p.start_us) as f64 / 1e6);
        }
        p.server_cpu_us_per_delivery = (p.received > 0 && !watched.is_empty()).then(|| p.server_cpu_us as f64 / p.received as f64);
        p.latency = Latency::from_histogram(&h);
        judge(&cfg, p);
        all.merge(&h);
    }
    let max_lossless_rate = phases.iter().filter(|p| p.held).map(|p| p.rate_asked).fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let summary = Summary {
        label: cfg.label.clone(),
        mode: if cfg.idle.is_some() { "idle".into() } else { format!("{:?} via {:?}", cfg.audience, cfg.publish).to_lowercase() },
        clients: cfg.clients,
        channels: cfg.channels,
        size: cfg.size.max(message::HEADER_LEN),
        workers: count,
        connections,
        phases,
        max_lossless_rate,
        idle,
        server: ServerProcess::list(&watched, &before, &after),
        seconds: started.elapsed().as_secs_f64(),
        aborted,
    };
    if !cfg.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    let text = summary.to_text();
    print!("{text}");
    if let Some(path) = &cfg.json {
        let json = serde_json::to_string_pretty(&summary)?;
        if path == "-" {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n").with_context(|| format!("writing {path}"))?;
        }
    }
    if let Some(path) = &cfg.svg {
        let marks: Vec<(u64, String)> = summary.phases.iter().map(|p| (p.start_us, format!("{}/s", p.rate_asked))).collect();
        let title = format!("{}: {} clients, {} channel(s), {} B messages", summary.label, summary.clients, summary.channels, summary.size);
        std::fs::write(path, crate::svg::render(&title, &seconds, &marks, &all)).with_context(|| format!("writing {path}"))?;
    }
    std::io::stdout().flush()?;
    Ok(summary)
}

/// Sets `held` and `verdict` from the phase's final numbers.
fn judge(cfg: &Config, p: &mut PhaseResult) {
    let mut why = Vec::new();
    if p.expected == 0 {
        why.push("no deliveries expected (no subscriber, or nothing published)".to_owned());
    }
    if p.lost > 0 {
        why.push(format!("{} of {} deliveries lost", p.lost, p.expected));
    }
    if p.sockets_ended > 0 {
        why.push(format!("{} sockets ended", p.sockets_ended));
    }
    if p.publish_errors > 0 || p.publish_skipped > 0 {
        why.push(format!("{} publish errors, {} not sent", p.publish_errors, p.publish_skipped));
    }
    if p.publish_rate < p.rate_asked * 0.95 {
        why.push(format!("publisher reached {:.1}/s of {:.1}/s", p.publish_rate, p.rate_asked));
    }
    if p.latency.p99_ms > cfg.max_p99 {
        why.push(format!("p99 {:.1} ms over {} ms (backlog)", p.latency.p99_ms, cfg.max_p99));
    }
    p.held = why.is_empty();
    p.verdict = if p.held { "held".into() } else { why.join("; ") };
}

async fn run_phases(
    cfg: &Rc<Config>,
    publisher: &Publisher,
    shared: &Rc<Shared>,
    subscribers: &[u64],
    deadline: Instant,
    aborted: &mut Option<String>,
) -> Vec<PhaseResult> {
    let mut plan: Vec<(f64, &'static str)> = cfg.rate.iter().map(|r| (*r, "fixed")).collect();
    if let Some(from) = cfg.search_from {
        let mut r = from;
        for _ in 0..cfg.search_steps {
            plan.push(((r * 10.0).round() / 10.0, "search"));
            r *= cfg.search_factor;
        }
    }
    let mut results = Vec::new();
    let mut seq_base = 0u64;
    for (i, (rate, kind)) in plan.into_iter().enumerate() {
        let needed = cfg.duration + cfg.drain + Duration::from_secs(2);
        if Instant::now() + needed > deadline {
            *aborted = Some(format!("deadline reached before phase {i}"));
            break;
        }
        if let Some(f) = shared.failure() {
            *aborted = Some(f);
            break;
        }
        {
            let mut st = shared.stage.borrow_mut();
            st.text = format!("phase {i} ({kind}) {rate}/s");
            st.phase = Some(i);
            st.expected = None;
        }
        let ended0 = shared.ended();
        let cpu0 = procstat::sample_all(&shared.watched);
        let own0 = procstat::total_cpu_us(&procstat::sample_all(&shared.own.borrow()));
        let t0 = Instant::now();
        let start_us = message::now_us();
        let outcome = publisher.run_phase(i as u32, rate, cfg.duration, seq_base).await;
        seq_base += (rate * cfg.duration.as_secs_f64()).round() as u64 + 1;
        let expected: u64 = outcome.published.iter().zip(subscribers).map(|(p, s)| u64::from(*p) * s).sum();
        shared.stage.borrow_mut().expected = Some(expected);
        // Drain: until everything arrived, nothing arrived for a while, or --drain ran out.
        let drain_end = (Instant::now() + cfg.drain).min(deadline);
        let mut last = shared.received(i);
        let mut last_change = Instant::now();
        while Instant::now() < drain_end {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = shared.received(i);
            if now >= expected {
                // Progress lines are 200 ms apart: one more so the final count has settled.
                tokio::time::sleep(Duration::from_millis(250)).await;
                break;
            }
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() > QUIET_FOR {
                break;
            }
        }
        let cpu1 = procstat::sample_all(&shared.watched);
        let own1 = procstat::total_cpu_us(&procstat::sample_all(&shared.own.borrow()));
        let wall = t0.elapsed().as_secs_f64();
        let cpu = procstat::total_cpu_us(&cpu1).saturating_sub(procstat::total_cpu_us(&cpu0));
        let received = shared.received(i);
        let mut p = PhaseResult {
            phase: i as u32,
            kind: kind.into(),
            rate_asked: rate,
            published: outcome.ok,
            publish_errors: outcome.errors,
            publish_errors_kinds: outcome.error_kinds.iter().map(|(k, (n, e))| (k.clone(), *n, e.clone())).collect(),
            publish_skipped: outcome.skipped,
            publish_rate: outcome.ok as f64 / outcome.elapsed.as_secs_f64().max(cfg.duration.as_secs_f64()),
            publish_lag_p99_ms: outcome.lag.quantile(0.99) as f64 / 1000.0,
            expected,
            received,
            lost: expected.saturating_sub(received),
            sockets_ended: shared.ended() - ended0,
            server_cpu_us: cpu,
            server_cores: cpu as f64 / 1e6 / wall,
            loadgen_cores: own1.saturating_sub(own0) as f64 / 1e6 / wall,
            seconds: wall,
            start_us,
            ..PhaseResult::default()
        };
        // Provisional verdict from progress (p99 as the largest per-worker p99) to steer the search.
        p.latency.p99_ms = shared.p99_us(i) as f64 / 1000.0;
        judge(cfg, &mut p);
        let held = p.held;
        if !cfg.quiet {
            let start = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { "\r\x1b[2K" } else { "" };
            eprintln!(
                "{start}[loadgen] phase {i} {kind} {rate}/s: published {} ({:.1}/s), received {}/{}, {}",
                p.published, p.publish_rate, received, expected, p.verdict
            );
        }
        results.push(p);
        if kind == "search" && !held {
            break;
        }
    }
    results
}

async fn spawn_worker(index: usize, setup: &WorkerSetup, shared: &Rc<Shared>) -> anyhow::Result<(Child, ChildStdin)> {
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
async fn live_line(shared: Rc<Shared>, cfg: Rc<Config>) {
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
        let (start, end) = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { ("\r\x1b[2K", "") } else { ("", "\n") };
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
