//! The phases: publish at a rate, wait for the deliveries, sample the server, and judge whether
//! the rate was held; fixed rates first, then the search (`crate::search`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::fleet::Shared;
use crate::message;
use crate::procstat;
use crate::publisher::Publisher;
use crate::search::{RateSearch, Step};
use crate::summary::PhaseResult;

/// A phase's deliveries count as complete when none arrived for this long.
const QUIET_FOR: Duration = Duration::from_millis(1500);
/// Sets `held` and `verdict` from the phase's final numbers.
pub(crate) fn judge(cfg: &Config, p: &mut PhaseResult) {
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

pub(crate) async fn run_phases(
    cfg: &Rc<Config>,
    publisher: &Publisher,
    shared: &Rc<Shared>,
    subscribers: &[u64],
    deadline: Instant,
    aborted: &mut Option<String>,
) -> Vec<PhaseResult> {
    let mut fixed = cfg.rate.iter().copied();
    let mut search =
        cfg.search_from.map(|from| RateSearch::new(from, cfg.search_factor, cfg.search_steps, cfg.search_refine));
    let mut results = Vec::new();
    let mut seq_base = 0u64;
    for i in 0.. {
        let (rate, step) = match fixed.next() {
            Some(rate) => (rate, None),
            None => match search.as_ref().and_then(RateSearch::next) {
                Some((rate, step)) => (rate, Some(step)),
                None => break,
            },
        };
        let kind = step.map_or("fixed", Step::kind);
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
        let machine0 = procstat::machine_times();
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
        let own = procstat::total_cpu_us(&procstat::sample_all(&shared.own.borrow())).saturating_sub(own0);
        let machine = procstat::machine_times().since(machine0);
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
            server_cpu_us_by_label: procstat::cpu_us_by_label(&shared.watched, &cpu0, &cpu1),
            server_cores: cpu as f64 / 1e6 / wall,
            loadgen_cores: own as f64 / 1e6 / wall,
            other_cores: machine.busy_us.saturating_sub(cpu).saturating_sub(own) as f64 / 1e6 / wall,
            steal_cores: machine.steal_us as f64 / 1e6 / wall,
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
        if let (Some(search), Some(step)) = (search.as_mut(), step) {
            search.record(rate, step, held);
        }
    }
    results
}
