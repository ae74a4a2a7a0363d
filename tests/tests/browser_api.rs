//! The JSON API and forms behind the browser pages (lobby, game, admin), over HTTP and real
//! websockets through nginx: every rule and every refusal, and who receives what. The same
//! flows in a real browser are in `browser.rs`.

use std::time::Duration;

use crier_tests::web_session::WebSession;
use crier_tests::{wait_until, Stack, StackOptions, WsClient};
use protocol::{Facility, Name};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";
const RECV: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

async fn stack_with_players(players: &[(&str, &[&str])]) -> Stack {
    let stack = Stack::start(StackOptions::default().ws_args(&["--presence", "lobby"])).await;
    for (name, groups) in players {
        crier_tests::browser::add_account(&stack.redis, stack.prefix(), name, PASSWORD, groups).await;
    }
    stack
}

async fn login(stack: &Stack, user: &str) -> WebSession {
    WebSession::login(&stack.front_url(""), user, PASSWORD).await
}

fn user_channel(stack: &Stack, user: &str, facility: &str) -> String {
    let (user, facility) = (Name::parse(user).unwrap(), Facility::parse(facility).unwrap());
    stack.prefix().user(&user, &facility).as_str().to_owned()
}

/// Opens `user`'s lobby socket (which puts them online) and waits until presence lists them.
async fn enter_lobby(stack: &Stack, session: &WebSession) -> WsClient {
    let mut socket = session.open(&stack.ws_url("/ws/lobby?subscribe-user")).await;
    stack.sync(&user_channel(stack, &session.user, "lobby"), std::slice::from_mut(&mut socket)).await;
    wait_until(RECV, &format!("{} is online", session.user), || async {
        let answer = session.get("/api/presence/lobby").await;
        answer.status == 200 && answer.json()["users"].as_array().unwrap().iter().any(|u| u == session.user.as_str())
    })
    .await;
    socket
}

fn error_of(answer: &crier_tests::HttpResponse) -> String {
    answer.json()["error"].as_str().unwrap_or_else(|| panic!("no error in {}", answer.body)).to_owned()
}

async fn expect_json(socket: &mut WsClient) -> Value {
    serde_json::from_str(&socket.expect_text(RECV).await).expect("JSON message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_checked_and_reach_both_players_only() {
    let stack = stack_with_players(&[("alice", &[]), ("bob", &[]), ("carol", &[])]).await;
    let (alice, bob, carol) = (login(&stack, "alice").await, login(&stack, "bob").await, login(&stack, "carol").await);
    let mut alice_lobby = enter_lobby(&stack, &alice).await;
    let mut bob_lobby = enter_lobby(&stack, &bob).await;

    // Refusals, each with a status and a message for the user.
    let refusals = [
        (json!({"to": "alice"}), 400, "cannot invite yourself"),
        (json!({"to": "zed"}), 404, "no player called zed"),
        (json!({"to": "carol"}), 409, "carol is not in the lobby"),
        (json!({"to": "a:b"}), 400, "must be a player's name"),
        (json!({"who": "bob"}), 400, "expected a JSON body like"),
    ];
    for (body, status, message) in refusals {
        let answer = alice.post_json("/api/invite", &body.to_string()).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(error_of(&answer).contains(message), "{body}: {}", answer.body);
    }
    let body = json!({"to": "bob"}).to_string();
    let no_csrf = alice.post_json_with("/api/invite", &body, None, "application/json").await;
    assert_eq!((no_csrf.status, error_of(&no_csrf).contains("CSRF")), (403, true), "{}", no_csrf.body);
    let wrong_csrf = alice.post_json_with("/api/invite", &body, Some(&bob.csrf), "application/json").await;
    assert_eq!(wrong_csrf.status, 403, "another session's token: {}", wrong_csrf.body);
    let form =
        alice.post_json_with("/api/invite", "to=bob", Some(&alice.csrf), "application/x-www-form-urlencoded").await;
    assert_eq!(form.status, 415, "{}", form.body);
    let anonymous = crier_tests::http::post_json(&stack.front_url("/api/invite"), None, body.clone()).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let wrong_method = alice.get("/api/invite").await;
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.body);
    alice_lobby.expect_silence(QUIET).await;
    bob_lobby.expect_silence(QUIET).await;

    // An invitation reaches the two players' lobby sockets.
    let answer = alice.post_json("/api/invite", &body).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let invitation = answer.json()["invitation"].clone();
    let id = invitation["id"].as_str().unwrap().to_owned();
    assert_eq!((invitation["from"].as_str(), invitation["to"].as_str()), (Some("alice"), Some("bob")));
    assert_eq!(invitation["status"], "pending");
    for socket in [&mut alice_lobby, &mut bob_lobby] {
        let message = expect_json(socket).await;
        assert_eq!(message["type"], "invitation");
        assert_eq!(message["invitation"]["id"], id.as_str());
        assert_eq!(message["invitation"]["status"], "pending");
    }
    let listed = bob.get("/api/invitations").await.json();
    assert_eq!(listed["invitations"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(carol.get("/api/invitations").await.json()["invitations"], json!([]));

    let again = alice.post_json("/api/invite", &body).await;
    assert_eq!((again.status, error_of(&again).contains("already invited bob")), (409, true), "{}", again.body);
    let back = bob.post_json("/api/invite", &json!({"to": "alice"}).to_string()).await;
    assert_eq!((back.status, error_of(&back).contains("alice already invited you")), (409, true), "{}", back.body);

    // Only the invitee answers, only once.
    let accept = format!("/api/invitations/{id}/accept");
    let decline = format!("/api/invitations/{id}/decline");
    let by_carol = carol.post_json(&accept, "").await;
    assert_eq!((by_carol.status, error_of(&by_carol)), (403, "this invitation is for bob, not for you".to_owned()));
    let by_alice = alice.post_json(&decline, "").await;
    assert_eq!(by_alice.status, 403, "{}", by_alice.body);
    let no_csrf = bob.post_json_with(&decline, "", None, "application/json").await;
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.body);
    assert_eq!(bob.get(&accept).await.status, 405);
    let unknown = bob.post_json("/api/invitations/0123456789abcdef0123456789abcdef/accept", "").await;
    assert_eq!((unknown.status, error_of(&unknown).contains("expired")), (404, true), "{}", unknown.body);

    let declined = bob.post_json(&decline, "").await;
    assert_eq!(declined.status, 200, "{}", declined.body);
    assert_eq!(declined.json()["invitation"]["status"], "declined");
    for socket in [&mut alice_lobby, &mut bob_lobby] {
        let message = expect_json(socket).await;
        assert_eq!(
            (message["invitation"]["id"].as_str(), message["invitation"]["status"].as_str()),
            (Some(id.as_str()), Some("declined"))
        );
    }
    let late = bob.post_json(&accept, "").await;
    assert_eq!((late.status, error_of(&late)), (409, "this invitation was already declined".to_owned()));
    alice_lobby.expect_silence(QUIET).await;
    bob_lobby.expect_silence(QUIET).await;

    // Once answered, alice may invite bob again.
    assert_eq!(alice.post_json("/api/invite", &body).await.status, 201);
}

async fn play(who: &WebSession, moves: &str, square: Value) -> crier_tests::HttpResponse {
    who.post_json(moves, &json!({ "square": square }).to_string()).await
}

/// alice invites bob and bob accepts; returns the game id.
async fn start_game(stack: &Stack, alice: &WebSession, bob: &WebSession) -> String {
    let invited = alice.post_json("/api/invite", &json!({"to": bob.user}).to_string()).await;
    assert_eq!(invited.status, 201, "{}", invited.body);
    let id = invited.json()["invitation"]["id"].as_str().unwrap().to_owned();
    let accepted = bob.post_json(&format!("/api/invitations/{id}/accept"), "").await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let url = accepted.json()["url"].as_str().expect("a game url").to_owned();
    assert_eq!(accepted.json()["invitation"]["url"], url.as_str());
    let game = url.strip_prefix("/game/").expect("/game/<id>").to_owned();
    assert!(stack.redis.exists(&format!("crier:games:{game}")).await);
    game
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_moves_are_validated_and_reach_only_the_two_players() {
    let stack = stack_with_players(&[("alice", &[]), ("bob", &[]), ("carol", &[])]).await;
    let (alice, bob, carol) = (login(&stack, "alice").await, login(&stack, "bob").await, login(&stack, "carol").await);
    let mut alice_lobby = enter_lobby(&stack, &alice).await;
    let _bob_lobby = enter_lobby(&stack, &bob).await;
    let id = start_game(&stack, &alice, &bob).await;

    // The inviter learns of the acceptance with the game's URL.
    let pending = expect_json(&mut alice_lobby).await;
    assert_eq!(pending["invitation"]["status"], "pending");
    let accepted = expect_json(&mut alice_lobby).await;
    assert_eq!(accepted["invitation"]["status"], "accepted");
    assert_eq!(accepted["invitation"]["url"], format!("/game/{id}"));

    let facility = format!("game/{id}");
    let path = format!("/ws/{facility}?subscribe-user&subscribe-broadcast&subscribe-group");
    let mut players = [alice.open(&stack.ws_url(&path)).await, bob.open(&stack.ws_url(&path)).await];
    let mut others = [carol.open(&stack.ws_url(&path)).await, WsClient::open(&stack.ws_url(&path)).await];
    stack.sync(&user_channel(&stack, "alice", &facility), &mut players[0..1]).await;
    stack.sync(&user_channel(&stack, "bob", &facility), &mut players[1..2]).await;

    // The page and the state are for the two players only.
    assert_eq!(alice.get(&format!("/game/{id}")).await.status, 200);
    let page = carol.get(&format!("/game/{id}")).await;
    assert_eq!((page.status, page.body.contains("Only the two players")), (403, true));
    let missing = alice.get("/game/0123456789abcdef0123456789abcdef").await;
    assert_eq!((missing.status, missing.body.contains("does not exist")), (404, true));
    let state = bob.get(&format!("/api/games/{id}")).await;
    assert_eq!(state.status, 200, "{}", state.body);
    let game = state.json()["game"].clone();
    assert_eq!(
        (game["x"].as_str(), game["o"].as_str(), game["next"].as_str()),
        (Some("alice"), Some("bob"), Some("alice"))
    );
    assert_eq!(game["board"], json!([null, null, null, null, null, null, null, null, null]));
    assert_eq!(carol.get(&format!("/api/games/{id}")).await.status, 403);

    let moves = format!("/api/games/{id}/moves");
    let refused = |answer: crier_tests::HttpResponse, status: u16, message: &str| {
        assert_eq!(answer.status, status, "{}", answer.body);
        assert!(error_of(&answer).contains(message), "wanted {message:?}: {}", answer.body);
    };

    refused(play(&bob, &moves, json!(0)).await, 409, "it is alice's turn");
    refused(play(&carol, &moves, json!(0)).await, 403, "not a player");
    refused(play(&alice, &moves, json!(9)).await, 400, "from 0 to 8");
    refused(play(&alice, &moves, json!("4")).await, 400, "from 0 to 8");
    refused(alice.post_json_with(&moves, r#"{"square": 4}"#, None, "application/json").await, 403, "CSRF");

    // X: 4, 2, 6 (a diagonal); O: 0, 1.
    for (i, (who, square)) in [(&alice, 4), (&bob, 0), (&alice, 2), (&bob, 1), (&alice, 6)].into_iter().enumerate() {
        let answer = play(who, &moves, json!(square)).await;
        assert_eq!(answer.status, 200, "move {i}: {}", answer.body);
        assert_eq!(answer.json()["game"]["moves"].as_array().unwrap().len(), i + 1);
        for socket in players.iter_mut() {
            let message = expect_json(socket).await;
            assert_eq!(message["type"], "game");
            assert_eq!((message["by"].as_str(), message["square"].as_i64()), (Some(who.user.as_str()), Some(square)));
            assert_eq!(message["game"]["moves"].as_array().unwrap().len(), i + 1);
        }
        if i == 1 {
            refused(play(&alice, &moves, json!(0)).await, 409, "row 1, column 1 is already taken");
        }
    }
    let over = bob.get(&format!("/api/games/{id}")).await.json()["game"].clone();
    assert_eq!((over["status"].as_str(), over["winner"].as_str()), (Some("won"), Some("alice")));
    assert_eq!(over["line"], json!([2, 4, 6]));
    refused(play(&bob, &moves, json!(8)).await, 409, "the game is over: alice won");

    // Nobody else received anything; a late player socket gets the last state replayed.
    for socket in others.iter_mut() {
        socket.expect_silence(QUIET).await;
    }
    let mut late = bob.open(&stack.ws_url(&path)).await;
    let replayed: Value = serde_json::from_str(&late.expect_text(RECV).await).unwrap();
    assert_eq!(replayed["game"]["status"], "won");
    let ttl = stack.redis.ttl(&format!("crier:games:{id}")).await;
    assert!((1..=3600).contains(&ttl), "game TTL {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_notices_are_broadcast_and_only_admins_may_send_them() {
    let stack = stack_with_players(&[("admin", &["admins"]), ("bob", &[])]).await;
    let (admin, bob) = (login(&stack, "admin").await, login(&stack, "bob").await);
    let mut pages = [
        WsClient::open(&stack.ws_url("/ws/notices?subscribe-broadcast")).await,
        bob.open(&stack.ws_url("/ws/notices?subscribe-broadcast")).await,
    ];
    stack.sync(&stack.broadcast_channel("notices"), &mut pages).await;

    let anonymous = crier_tests::http::get(&stack.front_url("/admin")).await;
    assert_eq!((anonymous.status, anonymous.header("location")), (303, Some("/login")));
    let forbidden = bob.get("/admin").await;
    assert_eq!((forbidden.status, forbidden.body.contains("admins group only")), (403, true));
    let page = admin.get("/admin").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<textarea id=\"notice\" name=\"text\""));

    let by_bob = bob.post_form("/admin/notices", &[("csrf", &bob.csrf), ("text", "hi")]).await;
    assert_eq!(by_bob.status, 403);
    let no_csrf = admin.post_form("/admin/notices", &[("text", "hi")]).await;
    assert_eq!((no_csrf.status, no_csrf.body.contains("form expired")), (403, true), "{}", no_csrf.body);
    let empty = admin.post_form("/admin/notices", &[("csrf", &admin.csrf), ("text", "   ")]).await;
    assert_eq!((empty.status, empty.body.contains("it is empty")), (400, true), "{}", empty.body);
    let long = "x".repeat(501);
    let too_long = admin.post_form("/admin/notices", &[("csrf", &admin.csrf), ("text", &long)]).await;
    assert_eq!((too_long.status, too_long.body.contains("the limit is 500")), (400, true), "{}", too_long.body);
    for page in pages.iter_mut() {
        page.expect_silence(QUIET).await;
    }

    let sent =
        admin.post_form("/admin/notices", &[("csrf", &admin.csrf), ("text", "Maintenance at <b>18:00</b>")]).await;
    assert_eq!((sent.status, sent.header("location")), (303, Some("/admin?sent=1")), "{}", sent.body);
    for page in pages.iter_mut() {
        let notice: Value = serde_json::from_str(&page.expect_text(RECV).await).unwrap();
        assert_eq!(notice, json!({"type": "notice", "text": "Maintenance at <b>18:00</b>", "from": "admin"}));
    }
    assert!(!stack.redis.exists(&stack.broadcast_channel("notices")).await, "notices are not kept for replay");
    assert!(admin.get("/admin?sent=1").await.body.contains("Notice sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_their_settings_and_static_files_are_served() {
    let stack = Stack::start(StackOptions::default().web_args(&[
        "--heartbeat=--heartbeat--",
        "--websocket-url",
        "wss://push.example.com/ws/",
    ]))
    .await;
    crier_tests::browser::add_account(&stack.redis, stack.prefix(), "alice", PASSWORD, &[]).await;
    let alice = login(&stack, "alice").await;
    let lobby = alice.get("/").await;
    let meta = |name: &str| crier_tests::web_session::meta_content(&lobby.body, name);
    assert_eq!(meta("crier-websocket").as_deref(), Some("wss://push.example.com/ws/"));
    assert_eq!(meta("crier-heartbeat").as_deref(), Some("--heartbeat--"));
    assert_eq!(meta("crier-user").as_deref(), Some("alice"));
    assert_eq!(meta("csrf-token").as_deref(), Some(alice.csrf.as_str()));
    let csp = lobby.header("content-security-policy").expect("CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!lobby.body.contains("<script>") && !has_inline_handler(&lobby.body), "no inline scripts or handlers");
    for script in ["ws4redis.js", "crier.js", "lobby.js"] {
        assert!(lobby.body.contains(&format!("<script src=\"/static/{script}\" defer></script>")), "{script}");
    }
    for (path, needle) in [
        ("/static/ws4redis.js", "function WS4Redis("),
        ("/static/crier.js", "Crier.socket"),
        ("/static/lobby.js", "/api/invite"),
        ("/static/game.js", "/moves"),
    ] {
        let file = crier_tests::http::get(&stack.front_url(path)).await;
        assert_eq!(file.status, 200, "{path}");
        assert_eq!(file.header("content-type"), Some("text/javascript; charset=utf-8"), "{path}");
        assert!(file.body.contains(needle), "{path}");
    }

    // Without --websocket-url the URL follows the request's Host and scheme.
    let stack = Stack::start(StackOptions::default()).await;
    crier_tests::browser::add_account(&stack.redis, stack.prefix(), "alice", PASSWORD, &[]).await;
    let alice = login(&stack, "alice").await;
    let lobby = alice.get("/").await;
    let expected = format!("ws://{}/ws/", stack.nginx().addr());
    assert_eq!(crier_tests::web_session::meta_content(&lobby.body, "crier-websocket"), Some(expected));
    assert_eq!(crier_tests::web_session::meta_content(&lobby.body, "crier-heartbeat"), None);
}

/// Whether an HTML text has an attribute like ` onclick=`.
fn has_inline_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(at, _)| {
        let rest = &html[at + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}
