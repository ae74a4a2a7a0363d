//! The coordinating process: writes sessions if needed, starts the worker processes, waits for
//! their connections, runs the idle hold or the phases, and merges everything into the summary,
//! chart and JSON.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncWriteExt;

use crate::config::{Config, PublishVia};
use crate::fleet::{live_line, spawn_worker, worker_count, Shared, Stage};
use crate::histogram::{Histogram, FINE_BITS};
use crate::message;
use crate::phases::{judge, run_phases};
use crate::procstat::{self, Watched};
use crate::publisher::Publisher;
use crate::report_types::{ConnectReport, FinalReport};
use crate::summary::{Connections, IdleResult, Latency, ServerProcess, Summary};
use crate::worker::WorkerSetup;

/// How long workers get to send their final report.
const FINAL_TIMEOUT: Duration = Duration::from_secs(20);

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
    let connect_reports: Vec<ConnectReport> =
        shared.workers.borrow().iter().filter_map(|w| w.connected.clone()).collect();
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
                pss_bytes_per_socket: (sockets > 0 && pss_after > 0)
                    .then(|| (pss_after as f64 - pss_before as f64) / sockets as f64),
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
    let mut foreign_messages = 0;
    for f in &finals {
        foreign_messages += f.foreign;
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
        p.server_cpu_us_per_delivery =
            (p.received > 0 && !watched.is_empty()).then(|| p.server_cpu_us as f64 / p.received as f64);
        p.latency = Latency::from_histogram(&h);
        judge(&cfg, p);
        all.merge(&h);
    }
    let max_lossless_rate = phases
        .iter()
        .filter(|p| p.held)
        .map(|p| p.rate_asked)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let summary = Summary {
        label: cfg.label.clone(),
        mode: if cfg.idle.is_some() {
            "idle".into()
        } else {
            format!("{:?} via {:?}", cfg.audience, cfg.publish).to_lowercase()
        },
        clients: cfg.clients,
        channels: cfg.channels,
        size: cfg.size.max(message::HEADER_LEN),
        workers: count,
        connections,
        phases,
        max_lossless_rate,
        foreign_messages,
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
        let marks: Vec<(u64, String)> =
            summary.phases.iter().map(|p| (p.start_us, format!("{}/s", p.rate_asked))).collect();
        let title = format!(
            "{}: {} clients, {} channel(s), {} B messages",
            summary.label, summary.clients, summary.channels, summary.size
        );
        std::fs::write(path, crate::svg::render(&title, &seconds, &marks, &all))
            .with_context(|| format!("writing {path}"))?;
    }
    std::io::stdout().flush()?;
    Ok(summary)
}
