//! The pages in a real browser: headless Chromium, driven by the Node.js scripts in
//! `tests/browser/` (playwright-core), against the whole stack behind nginx.
//!
//! Needs `node`, Debian's `chromium` and `npm ci` in `tests/browser` (scripts/test.sh installs
//! all three). Screenshots go to `target/test-artifacts/`.

use std::path::Path;
use std::time::{Duration, Instant};

use crier_tests::browser::{add_account, artifacts_dir, chromium, require_node_modules, NodeScript};
use crier_tests::{Stack, StackOptions};

const PASSWORD: &str = "correct horse battery";
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

/// Two players in two browser contexts sign in, see each other in the lobby, invite, accept and
/// play tic-tac-toe to a win, each seeing the other's moves; refused moves show a message; the
/// pages survive a wsserver restart; a reload restores the board; an admin's notice reaches
/// every page. See `tests/browser/game.test.mjs` for the steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_invitation_game_notice_and_reconnect_in_chromium() {
    require_node_modules();
    let chromium = chromium();
    let mut stack = Stack::start(
        StackOptions::default()
            .ws_args(&["--presence", "lobby", "--heartbeat=--heartbeat--"])
            .web_args(&["--heartbeat=--heartbeat--"]),
    )
    .await;
    for (name, groups) in [("alice", &[][..]), ("bob", &[][..]), ("admin", &["admins"][..])] {
        add_account(&stack.redis, stack.prefix(), name, PASSWORD, groups).await;
    }

    run_script(&mut stack, "game.test.mjs", &chromium).await;
}

/// Recovery in the game page: alice's socket is down (wsserver stopped) while bob moves; after
/// the reconnect the move appears on her page with no navigation and no fetch of the game
/// state (the ws4redis last-message keys are deleted first, so only recovery can bring it). Then the history is deleted while the sockets are down and alice moves: bob's page
/// cannot recover and fetches the game state instead (still no navigation). See
/// `tests/browser/recovery.test.mjs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_move_recovered_after_reconnect_or_state_fetched_after_history_expired_in_chromium() {
    require_node_modules();
    let chromium = chromium();
    let history = ["--history", "*"];
    let mut stack = Stack::start(
        StackOptions::default()
            .ws_args(&["--presence", "lobby", "--heartbeat=--heartbeat--"])
            .ws_args(&history)
            .web_args(&["--heartbeat=--heartbeat--"])
            .web_args(&history),
    )
    .await;
    for name in ["alice", "bob"] {
        add_account(&stack.redis, stack.prefix(), name, PASSWORD, &[]).await;
    }
    run_script(&mut stack, "recovery.test.mjs", &chromium).await;
}

/// Runs `tests/browser/<script>` against the stack's front, carries out its requests, and
/// asserts that it passed.
async fn run_script(stack: &mut Stack, name: &str, chromium: &Path) {
    let front = stack.front_url("");
    let mut script = NodeScript::spawn(
        &[name, &front],
        &[
            ("CRIER_PASSWORD", PASSWORD.to_owned()),
            ("CRIER_ARTIFACTS", artifacts_dir().display().to_string()),
            ("CRIER_CHROMIUM", chromium.display().to_string()),
        ],
    );
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    loop {
        let request = tokio::time::timeout_at(deadline.into(), script.next_request()).await;
        match request.as_ref().map(|r| r.as_deref()) {
            Err(_) => panic!("the browser script ran over {SCRIPT_TIMEOUT:?}; its output:\n{}", script.output()),
            Ok(None) => break,
            Ok(Some("restart-wsserver")) => {
                stack.stop_wsserver().await.expect("wsserver stops cleanly");
                stack.restart_wsserver().await;
            }
            Ok(Some("stop-wsserver")) => stack.stop_wsserver().await.expect("wsserver stops cleanly"),
            Ok(Some("start-wsserver")) => stack.restart_wsserver().await,
            Ok(Some("expire-history")) => {
                let deleted = delete_history_streams(stack).await;
                assert!(deleted > 0, "no history stream to delete: the servers did not keep history");
            }
            Ok(Some("forget-last-messages")) => {
                let pattern = format!("{}user:*:game/*", stack.prefix().as_str());
                let deleted = delete_keys(stack, &pattern).await;
                assert!(deleted > 0, "no game message was stored (ws4redis last-message keys {pattern})");
            }
            Ok(Some(other)) => panic!("unknown request from the browser script: {other:?}"),
        }
        script.reply("ok");
    }
    let status = script.wait(Duration::from_secs(30)).await;
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "the browser script failed ({status:?}); its output:\n{}\nnginx error log:\n{}",
        script.output(),
        stack.nginx().error_log()
    );
}

/// Deletes every channel's history stream (`{prefix}crier:history:*`) and keeps the meta hashes,
/// which is what an expired history (CRIER_HISTORY_TTL) leaves behind. Returns how many.
async fn delete_history_streams(stack: &Stack) -> usize {
    delete_keys(stack, &format!("{}crier:history:*", stack.prefix().as_str())).await
}

/// Deletes the keys matching `pattern`; returns how many.
async fn delete_keys(stack: &Stack, pattern: &str) -> usize {
    let keys: Vec<String> = stack.redis.query(redis::cmd("KEYS").arg(pattern)).await;
    if !keys.is_empty() {
        let _: i64 = stack.redis.query(redis::cmd("DEL").arg(&keys)).await;
    }
    keys.len()
}

/// The JS client's own behaviour (backoff, heartbeats, URLs, the ws4redis API) against a fake
/// WebSocket and clock: `node --test tests/browser/ws4redis.test.mjs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws4redis_js_client_unit_tests() {
    let mut script = NodeScript::spawn(&["--test", "ws4redis.test.mjs"], &[]);
    while script.next_request().await.is_some() {}
    let status = script.wait(Duration::from_secs(60)).await;
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "node --test ws4redis.test.mjs failed ({status:?}):\n{}",
        script.output()
    );
}
