//! The pages in a real browser: headless Chromium, driven by the Node.js scripts in
//! `tests/browser/` (playwright-core), against the whole stack behind nginx.
//!
//! Needs `node`, Debian's `chromium` and `npm ci` in `tests/browser` (scripts/test.sh installs
//! all three). Screenshots go to `target/test-artifacts/`.

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

    let front = stack.front_url("");
    let mut script = NodeScript::spawn(
        &["game.test.mjs", &front],
        &[
            ("CRIER_PASSWORD", PASSWORD.to_owned()),
            ("CRIER_ARTIFACTS", artifacts_dir().display().to_string()),
            ("CRIER_CHROMIUM", chromium.display().to_string()),
        ],
    );
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    loop {
        let request = tokio::time::timeout_at(deadline.into(), script.next_request()).await;
        match request {
            Err(_) => panic!("the browser script ran over {SCRIPT_TIMEOUT:?}; its output:\n{}", script.output()),
            Ok(None) => break,
            Ok(Some(request)) if request == "restart-wsserver" => {
                stack.stop_wsserver().await.expect("wsserver stops cleanly");
                stack.restart_wsserver().await;
                script.reply("ok");
            }
            Ok(Some(other)) => panic!("unknown request from the browser script: {other:?}"),
        }
    }
    let status = script.wait(Duration::from_secs(30)).await;
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "the browser script failed ({status:?}); its output:\n{}\nnginx error log:\n{}",
        script.output(),
        stack.nginx().error_log()
    );
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
