//! The load generator end to end: `loadgen` as a child process against a real stack (Redis,
//! wsserver, webserver) with a fixed-rate phase and a short rate search, its JSON summary, SVG
//! chart and text report checked; and its refusal of bad arguments.

use std::process::{Command, ExitStatus};
use std::time::Duration;

use crier_tests::process::ChildProcess;
use crier_tests::server_process::loadgen_bin;
use crier_tests::{Stack, StackOptions, TempDir};
use serde_json::Value;

const CLIENTS: u64 = 20;
const FACILITY: &str = "lgtest";
const FIXED_RATE: f64 = 20.0;
const SEARCH_FROM: f64 = 50.0;
const SEARCH_FACTOR: f64 = 2.0;
/// loadgen's own limit on the whole run (`--deadline`, seconds): far above what the phases need
/// (connect, then at most 1 + 2 + 2 phases of `--duration 1` plus drain), and checked by loadgen
/// before each phase against duration + drain + 2 s.
const DEADLINE_SECS: u64 = 60;
/// The test's own bound on the child, above loadgen's deadline (workers get 20 s for their final
/// report after it).
const OUTER_TIMEOUT: Duration = Duration::from_secs(DEADLINE_SECS + 40);

/// Environment variables loadgen reads flags from; removed so the caller's environment cannot
/// change what a test runs.
const LOADGEN_ENV: [&str; 7] = [
    "LOADGEN_WS_URL",
    "LOADGEN_FACILITY",
    "LOADGEN_PUBLISH_URL",
    "LOADGEN_PUBLISH_UNIX_SOCKET",
    "LOADGEN_REDIS_URL",
    "LOADGEN_SERVER_PID",
    "CRIER_PUBLISH_TOKEN",
];

/// A finished loadgen run.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs loadgen with `args` and waits for it to exit, up to `timeout` (then kills it and panics
/// with its output).
async fn run_loadgen(args: &[String], timeout: Duration) -> Run {
    let mut command = Command::new(loadgen_bin());
    command.args(args);
    for var in LOADGEN_ENV {
        command.env_remove(var);
    }
    let mut loadgen = ChildProcess::spawn("loadgen", command);
    let Some(status) = loadgen.wait_exit(timeout).await else {
        loadgen.kill();
        panic!("loadgen {args:?} did not exit within {timeout:?}\n{}", loadgen.output());
    };
    Run { status, stdout: loadgen.stdout(), stderr: loadgen.stderr() }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

fn num(v: &Value, field: &str) -> f64 {
    v[field].as_f64().unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

fn int(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} is not an unsigned integer in {v}"))
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

fn held(p: &Value) -> bool {
    p["held"].as_bool().unwrap_or_else(|| panic!("held is not a bool in {p}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_runs_fixed_and_search_phases_against_the_stack() {
    let stack = Stack::start(StackOptions::default().without_nginx()).await;
    let dir = TempDir::new("loadgen").expect("temp dir");
    let json_path = dir.path().join("out.json");
    let svg_path = dir.path().join("out.svg");
    // wsserver and webserver run inside this test process: it is the server process to sample.
    let server_pid = std::process::id();

    let run_args = args(&[
        "--label",
        "crier-e2e",
        "--ws-url",
        &stack.direct_ws_url(&format!("/ws/{FACILITY}?subscribe-broadcast")),
        "--facility",
        FACILITY,
        "--audience",
        "broadcast",
        "--clients",
        &CLIENTS.to_string(),
        "--publish",
        "api",
        "--publish-url",
        &stack.web_url("/api/publish"),
        "--publish-token",
        stack.publish_token(),
        "--server-pid",
        &format!("stack={server_pid}"),
        "--rate",
        &FIXED_RATE.to_string(),
        "--search-from",
        &SEARCH_FROM.to_string(),
        "--search-factor",
        &SEARCH_FACTOR.to_string(),
        "--search-steps",
        "2",
        "--search-refine",
        "2",
        "--duration",
        "1",
        "--drain",
        "3",
        "--deadline",
        &DEADLINE_SECS.to_string(),
        "--json",
        json_path.to_str().expect("utf-8 temp path"),
        "--svg",
        svg_path.to_str().expect("utf-8 temp path"),
        "--quiet",
    ]);
    let run = run_loadgen(&run_args, OUTER_TIMEOUT).await;
    let context = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.status.success(), "loadgen exited with {}\n{context}", run.status);

    let json = std::fs::read_to_string(&json_path)
        .unwrap_or_else(|e| panic!("no JSON summary at {}: {e}\n{context}", json_path.display()));
    let summary: Value = serde_json::from_str(&json).expect("the JSON summary parses");
    let context = format!("{context}\nsummary:\n{json}");

    // The run as configured, not aborted.
    assert!(summary["aborted"].is_null(), "aborted\n{context}");
    assert_eq!(text(&summary, "label"), "crier-e2e");
    assert_eq!(text(&summary, "mode"), "broadcast via api");
    assert_eq!(int(&summary, "clients"), CLIENTS);
    assert_eq!(int(&summary, "channels"), 1);
    assert!(int(&summary, "workers") >= 1);
    assert!(num(&summary, "seconds") > 0.0);

    // Every client connected and stayed connected.
    let c = &summary["connections"];
    assert_eq!(int(c, "attempted"), CLIENTS, "{context}");
    assert_eq!(int(c, "connected"), CLIENTS, "{context}");
    assert_eq!(int(c, "failed"), 0, "{context}");
    assert_eq!(c["errors"].as_array().map(Vec::len), Some(0), "{context}");
    assert_eq!(int(c, "ended_during_run"), 0, "{context}");

    let phases = summary["phases"].as_array().expect("phases is a list");
    assert!(!phases.is_empty(), "no phases\n{context}");
    for (i, p) in phases.iter().enumerate() {
        assert_eq!(int(p, "phase"), i as u64, "phases are numbered in order");
        let kind = text(p, "kind");
        assert!(["fixed", "search", "refine"].contains(&kind), "phase {i} has kind {kind:?}");
        // Host steal is reported apart from the machine's own work, never negative.
        assert!(num(p, "steal_cores") >= 0.0, "phase {i}\n{context}");
        assert!(num(p, "other_cores") >= 0.0, "phase {i}\n{context}");
    }

    // The fixed phase: first, held, every delivery arrived, in order, exactly once.
    let fixed = &phases[0];
    assert_eq!(text(fixed, "kind"), "fixed", "{context}");
    assert_eq!(phases.iter().filter(|p| p["kind"] == "fixed").count(), 1, "{context}");
    assert_eq!(num(fixed, "rate_asked"), FIXED_RATE);
    // One second at 20/s, each publish fanned out to every client.
    assert_eq!(int(fixed, "published"), 20, "{context}");
    assert_eq!(int(fixed, "publish_errors"), 0, "{context}");
    assert_eq!(int(fixed, "publish_skipped"), 0, "{context}");
    assert_eq!(int(fixed, "expected"), 20 * CLIENTS, "{context}");
    assert_eq!(int(fixed, "received"), int(fixed, "expected"), "{context}");
    assert_eq!(int(fixed, "lost"), 0, "{context}");
    assert_eq!(num(fixed, "loss_pct"), 0.0, "{context}");
    assert_eq!(int(fixed, "reordered"), 0, "{context}");
    assert_eq!(int(fixed, "duplicates"), 0, "{context}");
    assert_eq!(int(fixed, "sockets_ended"), 0, "{context}");
    // Held; on a machine busy with the other tests the only excuse is a late publisher (20
    // publishes must leave within about a second), never a lost or reordered delivery.
    assert!(
        held(fixed) || text(fixed, "verdict").starts_with("publisher reached"),
        "fixed phase not held: {}\n{context}",
        text(fixed, "verdict")
    );

    // The search: up by the factor from --search-from while held (at most --search-steps), then
    // refinement only after a failed step.
    let search: Vec<&Value> = phases.iter().filter(|p| p["kind"] == "search").collect();
    assert!(!search.is_empty(), "no search phase\n{context}");
    assert!(search.len() <= 2, "more than --search-steps\n{context}");
    let mut expected_rate = SEARCH_FROM;
    for (k, p) in search.iter().enumerate() {
        assert_eq!(num(p, "rate_asked"), expected_rate, "search step {k}");
        if k + 1 < search.len() {
            assert!(held(p), "the search stepped up past a failed step\n{context}");
        }
        expected_rate *= SEARCH_FACTOR;
    }
    let refines = phases.iter().filter(|p| p["kind"] == "refine").count();
    assert!(refines <= 2, "more than --search-refine\n{context}");
    if refines > 0 {
        assert!(search.iter().any(|p| !held(p)), "refinement without a failed search step\n{context}");
    }
    // Search phases come after the fixed one, refinements after the search steps.
    let kinds: Vec<&str> = phases.iter().map(|p| text(p, "kind")).collect();
    let order = |k: &str| ["fixed", "search", "refine"].iter().position(|x| *x == k);
    assert!(kinds.windows(2).all(|w| order(w[0]) <= order(w[1])), "phase kinds out of order: {kinds:?}");
    // A refinement lies strictly between the highest rate held before it and the lowest failed.
    for (i, p) in phases.iter().enumerate() {
        if p["kind"] != "refine" {
            continue;
        }
        let rate = num(p, "rate_asked");
        let before = &phases[..i];
        let held_below =
            before.iter().filter(|q| held(q)).map(|q| num(q, "rate_asked")).fold(f64::NEG_INFINITY, f64::max);
        let failed = before
            .iter()
            .filter(|q| !held(q) && q["kind"] != "fixed")
            .map(|q| num(q, "rate_asked"))
            .fold(f64::INFINITY, f64::min);
        assert!(failed.is_finite(), "refine phase {i} without a failed rate");
        assert!(
            held_below < rate && rate < failed,
            "refine phase {i} at {rate}/s is not between held {held_below}/s and failed {failed}/s\n{context}"
        );
    }

    // Held phases delivered everything; the summary's best rate is the highest held one.
    for p in phases.iter().filter(|p| held(p)) {
        assert!(int(p, "expected") > 0);
        assert_eq!(int(p, "received"), int(p, "expected"), "{p}");
        assert_eq!(int(p, "lost"), 0, "{p}");
        assert_eq!(int(p, "publish_errors"), 0, "{p}");
    }
    let best = phases.iter().filter(|p| held(p)).map(|p| num(p, "rate_asked")).fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(summary["max_lossless_rate"].as_f64(), Some(best), "{context}");

    // Latency percentiles are positive and ordered wherever something was delivered.
    for p in phases.iter().filter(|p| int(p, "received") > 0) {
        let l = &p["latency"];
        let [p50, p90, p99, p999, max] = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"].map(|f| num(l, f));
        assert!(p50 > 0.0, "p50 {p50} in {p}");
        assert!(p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max, "unordered percentiles {l}");
        assert!(num(l, "mean_ms") > 0.0 && num(l, "mean_ms") <= max, "{l}");
        // The server process was sampled.
        assert!(p["server_cpu_us_per_delivery"].is_number(), "no CPU per delivery in {p}");
    }

    // The sampled server process.
    let server = summary["server"].as_array().expect("server is a list");
    assert_eq!(server.len(), 1, "{context}");
    assert_eq!(text(&server[0], "label"), "stack");
    assert_eq!(int(&server[0], "pid"), u64::from(server_pid));
    assert!(int(&server[0]["after"], "rss_bytes") > 0);
    assert!(int(&server[0]["after"], "cpu_us") >= int(&server[0]["before"], "cpu_us"));

    // The chart.
    let svg = std::fs::read_to_string(&svg_path)
        .unwrap_or_else(|e| panic!("no SVG at {}: {e}\n{context}", svg_path.display()));
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "not an SVG: {}",
        svg.chars().take(200).collect::<String>()
    );
    assert!(svg.trim_end().ends_with("</svg>"), "SVG is cut short");

    // The text summary on stdout (--quiet only drops the live progress on stderr).
    assert!(run.stdout.contains("== loadgen: crier-e2e (broadcast via api) =="), "{context}");
    assert!(run.stdout.contains(&format!("connections: {CLIENTS}/{CLIENTS} open, 0 failed, 0 ended")), "{context}");
    assert!(run.stdout.contains(&format!("highest rate held without loss: {best:.1} publishes/s")), "{context}");
    assert!(!run.stderr.contains("[loadgen] phase"), "--quiet still printed progress\n{context}");
}

/// `--publish-unix-socket`: the API's requests go over webserver's unix socket (a publisher on
/// the server's host), the URL giving only the path and Host header; a socket that is not
/// there is a publish error of the phase, not a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_publishes_over_webservers_unix_socket() {
    let stack = Stack::start(StackOptions::default().without_nginx()).await;
    let dir = TempDir::new("loadgen-unix").expect("temp dir");
    let service::listen::ListenAddr::Unix(socket) = stack.web_socket() else { panic!("webserver has a unix socket") };
    let run = |socket: String, json: std::path::PathBuf| {
        let ws_url = stack.direct_ws_url(&format!("/ws/{FACILITY}?subscribe-broadcast"));
        let run_args = args(&[
            "--ws-url",
            &ws_url,
            "--facility",
            FACILITY,
            "--clients",
            "5",
            "--publish",
            "api",
            // Nothing listens at this port: only the unix socket can answer.
            "--publish-url",
            "http://127.0.0.1:9/api/publish",
            "--publish-unix-socket",
            &socket,
            "--publish-token",
            stack.publish_token(),
            "--rate",
            "10",
            "--search-steps",
            "0",
            "--duration",
            "1",
            "--drain",
            "3",
            "--deadline",
            &DEADLINE_SECS.to_string(),
            "--json",
            json.to_str().expect("utf-8 temp path"),
            "--quiet",
        ]);
        async move {
            let run = run_loadgen(&run_args, OUTER_TIMEOUT).await;
            let context = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
            let json = std::fs::read_to_string(&json)
                .unwrap_or_else(|e| panic!("no JSON summary at {}: {e}\n{context}", json.display()));
            (run.status, serde_json::from_str::<Value>(&json).expect("the JSON summary parses"), context)
        }
    };

    let (status, summary, context) = run(socket.display().to_string(), dir.path().join("ok.json")).await;
    assert!(status.success(), "loadgen exited with {status}\n{context}");
    let fixed = &summary["phases"][0];
    assert_eq!(int(fixed, "published"), 10, "{context}");
    assert_eq!(int(fixed, "publish_errors"), 0, "{context}");
    assert_eq!(int(fixed, "received"), 10 * 5, "{context}");
    assert_eq!(int(fixed, "lost"), 0, "{context}");

    let missing = dir.path().join("nothing-here.sock").display().to_string();
    let (_, summary, context) = run(missing, dir.path().join("missing.json")).await;
    let fixed = &summary["phases"][0];
    assert_eq!(int(fixed, "published"), 0, "{context}");
    assert!(int(fixed, "publish_errors") > 0, "{context}");
    assert!(summary["phases"][0]["publish_errors_kinds"].to_string().contains("connect"), "{context}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_refuses_bad_arguments() {
    let token = ["--publish-token", "a-token-of-at-least-16-chars"];
    let cases: [(Vec<&str>, &str); 5] = [
        ([&token[..], &["--rate", "10", "--search-factor", "1"]].concat(), "--search-factor must be in (1, 10]"),
        (
            [&token[..], &["--search-from", "10", "--search-factor", "11"]].concat(),
            "--search-factor must be in (1, 10]",
        ),
        ([&token[..], &["--rate", "0"]].concat(), "rates must be in (0, 1000000]"),
        (vec!["--rate", "10"], "--publish api needs --publish-token"),
        // Rejected by the argument parser itself.
        ([&token[..], &["--rate", "10", "--duration", "soon"]].concat(), "--duration"),
    ];
    for (case, expected) in cases {
        let run = run_loadgen(&args(&case), Duration::from_secs(30)).await;
        assert!(!run.status.success(), "loadgen {case:?} succeeded\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
        assert_eq!(run.status.code(), Some(2), "loadgen {case:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(expected),
            "loadgen {case:?}: stderr does not mention {expected:?}:\n{}",
            run.stderr
        );
        assert!(run.stdout.trim().is_empty(), "loadgen {case:?} printed a report:\n{}", run.stdout);
    }
}
