//! A worker process: opens its share of the clients at its share of the connect rate, counts
//! every message they receive (per phase: deliveries, reordering, latency), reports progress on
//! stdout several times a second, and its final counts when the coordinator writes `finish` (or
//! closes stdin, or the deadline passes). Single-threaded: all clients of a worker run on one
//! thread, so their shared counters need no atomics or locks.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{watch, Semaphore};

use crate::client::{self, Target};
use crate::config::{Audience, Config};
use crate::histogram::{Histogram, COARSE_BITS, FINE_BITS};
use crate::message;
use crate::report_types::{ConnectReport, FinalReport, PhaseCounts, Progress, WorkerMsg};

/// How often progress goes to the coordinator.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// The first line a worker reads on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSetup {
    pub config: Config,
    pub worker_count: usize,
    /// Client indices this worker opens: first..end.
    pub first: usize,
    pub end: usize,
    /// Distinguishes this run's session keys from earlier runs'.
    pub run_id: String,
}

/// Session key of client `i` (audience user).
pub fn session_key(run_id: &str, i: usize) -> String {
    format!("lg-{run_id}-{i}")
}

/// User name of channel `ch` (audience user).
pub fn user_name(ch: usize) -> String {
    format!("lgu{ch}")
}

#[derive(Default)]
struct State {
    connect: ConnectReport,
    ended: u64,
    ended_kinds: BTreeMap<String, u64>,
    phases: Vec<PhaseCounts>,
    seconds: BTreeMap<u64, Histogram>,
    current_second: u64,
    current: Option<Histogram>,
    foreign: u64,
    recent_max_us: u64,
    subscribers: BTreeMap<u32, u32>,
}

impl State {
    fn on_message(&mut self, payload: &[u8], now_us: u64, last_seq: &mut Option<u64>) {
        let Some(stamp) = message::decode(payload) else {
            self.foreign += 1;
            return;
        };
        let phase = stamp.phase as usize;
        if phase >= self.phases.len() {
            self.phases.resize_with(phase + 1, PhaseCounts::default);
        }
        let latency = now_us.saturating_sub(stamp.sent_us);
        let p = &mut self.phases[phase];
        p.received += 1;
        if p.first_us == 0 {
            p.first_us = now_us;
        }
        p.last_us = p.last_us.max(now_us);
        p.latency.get_or_insert_with(|| Histogram::new(FINE_BITS)).record(latency);
        match *last_seq {
            Some(last) if stamp.seq < last => p.reordered += 1,
            Some(last) if stamp.seq == last => p.duplicates += 1,
            _ => {}
        }
        *last_seq = Some(last_seq.map_or(stamp.seq, |l| l.max(stamp.seq)));
        let second = now_us / 1_000_000;
        if second != self.current_second {
            self.flush_second();
            self.current_second = second;
        }
        self.current.get_or_insert_with(|| Histogram::new(COARSE_BITS)).record(latency);
        self.recent_max_us = self.recent_max_us.max(latency);
    }

    fn flush_second(&mut self) {
        if let Some(h) = self.current.take() {
            match self.seconds.get_mut(&self.current_second) {
                Some(existing) => existing.merge(&h),
                None => {
                    self.seconds.insert(self.current_second, h);
                }
            }
        }
    }

    fn progress(&mut self) -> Progress {
        let p = Progress {
            connected: self.connect.connected,
            failed: self.connect.failed,
            ended: self.ended,
            received: self.phases.iter().map(|p| p.received).collect(),
            recent_max_us: self.recent_max_us,
            p99_us: self.phases.iter().map(|p| p.latency.as_ref().map_or(0, |h| h.quantile(0.99))).collect(),
        };
        self.recent_max_us = 0;
        p
    }
}

fn emit(msg: &WorkerMsg) {
    let line = serde_json::to_string(msg).expect("worker messages serialise");
    let mut out = std::io::stdout().lock();
    // The coordinator going away ends the worker through stdin; a failed write changes nothing.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Entry point of `loadgen --worker N`.
pub fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, run());
    if let Err(e) = &result {
        emit(&WorkerMsg::Failed { error: format!("{e:#}") });
    }
    // Sockets close with the process; nothing else to wait for.
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

async fn run() -> anyhow::Result<()> {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let line = stdin.next_line().await?.context("no setup line on stdin")?;
    let setup: WorkerSetup = serde_json::from_str(&line).context("bad setup line")?;
    let cfg = Rc::new(setup.config.clone());
    let deadline = Instant::now() + cfg.effective_deadline();

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::task::spawn_local(async move {
        loop {
            let next = tokio::time::timeout_at(deadline.into(), stdin.next_line()).await;
            match next {
                Ok(Ok(Some(l))) if l.trim() != "finish" => continue,
                _ => break,
            }
        }
        let _ = stop_tx.send(true);
    });

    let template = Target::parse(&cfg.ws_url.replace("{channel}", "x")).map_err(anyhow::Error::msg)?;
    let addr = template.resolve().await.map_err(anyhow::Error::msg)?;
    let state = Rc::new(RefCell::new(State::default()));
    let started = Instant::now();
    let rate = cfg.connect_rate / setup.worker_count as f64;
    let budget = cfg.connect_budget();
    let permits = std::sync::Arc::new(Semaphore::new(cfg.connect_concurrency));
    let mut stop = stop_rx.clone();
    for (k, i) in (setup.first..setup.end).enumerate() {
        if *stop.borrow() || started.elapsed() > budget {
            break;
        }
        let at = started + Duration::from_secs_f64(k as f64 / rate);
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => {}
            _ = stop.changed() => break,
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = stop.changed() => break,
        };
        state.borrow_mut().connect.attempted += 1;
        let job = ClientJob {
            cfg: cfg.clone(),
            state: state.clone(),
            template: template.clone(),
            addr,
            index: i,
            run_id: setup.run_id.clone(),
            stop: stop_rx.clone(),
        };
        tokio::task::spawn_local(async move {
            job.run(permit).await;
        });
        if k % 1000 == 999 {
            emit(&WorkerMsg::Progress(state.borrow_mut().progress()));
        }
    }
    // Wait for the attempts still under way.
    loop {
        let done = {
            let s = state.borrow();
            s.connect.connected + s.connect.failed >= s.connect.attempted
        };
        if done || started.elapsed() > budget + cfg.connect_timeout || *stop_rx.borrow() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let mut s = state.borrow_mut();
        s.connect.seconds = started.elapsed().as_secs_f64();
        s.connect.subscribers = s.subscribers.iter().map(|(c, n)| (*c, *n)).collect();
        emit(&WorkerMsg::Connected(s.connect.clone()));
    }
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut stop = stop_rx.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => emit(&WorkerMsg::Progress(state.borrow_mut().progress())),
            r = stop.wait_for(|v| *v) => { let _ = r; break; }
        }
    }
    // Let the clients see the stop and stop counting.
    tokio::task::yield_now().await;
    let mut s = state.borrow_mut();
    s.flush_second();
    let report = FinalReport {
        phases: std::mem::take(&mut s.phases),
        seconds: std::mem::take(&mut s.seconds).into_iter().collect(),
        foreign: s.foreign,
        ended: s.ended,
        ended_kinds: std::mem::take(&mut s.ended_kinds).into_iter().collect(),
    };
    emit(&WorkerMsg::Final(report));
    Ok(())
}

struct ClientJob {
    cfg: Rc<Config>,
    state: Rc<RefCell<State>>,
    template: Target,
    addr: SocketAddr,
    index: usize,
    run_id: String,
    stop: watch::Receiver<bool>,
}

impl ClientJob {
    async fn run(mut self, permit: tokio::sync::OwnedSemaphorePermit) {
        let cfg = &self.cfg;
        let channel = self.index % cfg.channels;
        let path = if cfg.ws_url.contains("{channel}") {
            let full = cfg.ws_url.replace("{channel}", &Config::channel_id(channel));
            Target::parse(&full).map(|t| t.path).unwrap_or_else(|_| self.template.path.clone())
        } else {
            self.template.path.clone()
        };
        let mut headers = String::new();
        if let Some(origin) = &cfg.origin {
            headers.push_str(&format!("Origin: {origin}\r\n"));
        }
        if cfg.audience == Audience::User {
            headers.push_str(&format!("Cookie: sessionid={}\r\n", session_key(&self.run_id, self.index)));
        }
        let source: Option<IpAddr> = match cfg.source_addrs.0.len() {
            0 => None,
            n => Some(IpAddr::V4(cfg.source_addrs.0[self.index % n])),
        };
        let connected = client::connect(self.addr, source, &self.template, &path, &headers, cfg.connect_timeout).await;
        drop(permit);
        let socket = match connected {
            Ok(s) => s,
            Err(e) => {
                let mut st = self.state.borrow_mut();
                st.connect.failed += 1;
                let kind = e.kind();
                match st.connect.errors.iter_mut().find(|(k, _, _)| *k == kind) {
                    Some(entry) => entry.1 += 1,
                    None => st.connect.errors.push((kind, 1, e.to_string())),
                }
                return;
            }
        };
        {
            let mut st = self.state.borrow_mut();
            st.connect.connected += 1;
            *st.subscribers.entry(channel as u32).or_default() += 1;
        }
        let state = self.state.clone();
        let mut last_seq = None;
        let stop = async move {
            let _ = self.stop.wait_for(|v| *v).await;
        };
        let ended = socket.run(|payload, now| state.borrow_mut().on_message(payload, now, &mut last_seq), stop).await;
        if !matches!(ended, client::Ended::Stopped) {
            let mut st = state.borrow_mut();
            st.ended += 1;
            *st.ended_kinds.entry(ended.kind()).or_default() += 1;
        }
    }
}
