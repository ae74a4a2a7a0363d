// Unit tests of webserver/static/ws4redis.js with a fake WebSocket and a fake clock:
//   node --test tests/browser/ws4redis.test.mjs
// (run by tests/tests/browser.rs). No browser and no npm packages needed.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const source = fs.readFileSync(path.join(here, '..', '..', 'webserver', 'static', 'ws4redis.js'), 'utf8');

/** A clock whose timers run only when advanced. */
class Clock {
  constructor() {
    this.now = 0;
    this.timers = new Map();
    this.nextId = 1;
  }
  set(fn, ms, repeat) {
    const id = this.nextId++;
    this.timers.set(id, { fn, at: this.now + ms, every: repeat ? ms : 0 });
    return id;
  }
  clear(id) {
    this.timers.delete(id);
  }
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t];
      if (!next) break;
      const [id, t] = next;
      this.now = t.at;
      if (t.every) t.at += t.every;
      else this.timers.delete(id);
      t.fn();
    }
    this.now = end;
  }
}

/** Loads ws4redis.js into a fresh context; returns WS4Redis with fake surroundings. */
function load({ protocol = 'http:', random = () => 0.5 } = {}) {
  const clock = new Clock();
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(data);
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
      if (this.onclose) this.onclose({ type: 'close', code: code || 1005, reason: reason || '', wasClean: true });
    }
    // server side
    open() {
      this.readyState = 1;
      this.onopen && this.onopen({ type: 'open' });
    }
    receive(data) {
      this.onmessage && this.onmessage({ data });
    }
    drop(code = 1006) {
      this.readyState = 3;
      this.onclose && this.onclose({ type: 'close', code, reason: '', wasClean: false });
    }
  }
  const window = { location: { protocol, host: 'example.com:8080', href: `${protocol}//example.com:8080/game/1` } };
  const context = vm.createContext({ window, Math, Date, URL, console });
  vm.runInContext(source, context);
  const WS4Redis = window.WS4Redis;
  WS4Redis.env = {
    WebSocket: FakeWebSocket,
    location: () => window.location,
    setTimeout: (fn, ms) => clock.set(fn, ms, false),
    clearTimeout: (id) => clock.clear(id),
    setInterval: (fn, ms) => clock.set(fn, ms, true),
    clearInterval: (id) => clock.clear(id),
    random,
    now: () => clock.now,
    onOnline: () => {},
  };
  return { WS4Redis, clock, sockets };
}

function recorder() {
  const calls = { connecting: 0, connected: 0, disconnected: [], messages: [] };
  return {
    calls,
    options: {
      connecting: () => calls.connecting++,
      connected: () => calls.connected++,
      disconnected: (evt) => calls.disconnected.push(evt),
      receive_message: (data) => calls.messages.push(data),
    },
  };
}

test('works with and without new, ignores a second ($) argument, needs a uri', () => {
  const { WS4Redis, sockets } = load();
  const a = WS4Redis({ uri: 'ws://h/ws/a' });
  const b = new WS4Redis({ uri: 'ws://h/ws/b' }, { extend() {} });
  assert.ok(a instanceof WS4Redis && b instanceof WS4Redis);
  assert.deepEqual(sockets.map((s) => s.url), ['ws://h/ws/a', 'ws://h/ws/b']);
  assert.throws(() => WS4Redis({}), /No Websocket URI/);
  for (const name of ['send_message', 'close', 'get_state', 'is_connecting', 'is_connected', 'is_closing', 'is_closed']) {
    assert.equal(typeof a[name], 'function', name);
  }
});

test('builds ws:// or wss:// URLs, wss behind TLS', () => {
  const http = load().WS4Redis;
  assert.equal(http({ uri: '/ws/chat?subscribe-broadcast' }).uri, 'ws://example.com:8080/ws/chat?subscribe-broadcast');
  assert.equal(http({ uri: 'ws://other/ws/x' }).uri, 'ws://other/ws/x');
  assert.equal(http({ uri: 'https://other/ws/x' }).uri, 'wss://other/ws/x');
  const https = load({ protocol: 'https:' }).WS4Redis;
  assert.equal(https({ uri: '/ws/chat' }).uri, 'wss://example.com:8080/ws/chat');
  assert.equal(https({ uri: 'ws://example.com/ws/chat' }).uri, 'wss://example.com/ws/chat');
  assert.equal(https({ uri: 'ws/chat' }).uri, 'wss://example.com:8080/game/ws/chat');
});

test('states, callbacks and send_message', () => {
  const { WS4Redis, sockets } = load();
  const r = recorder();
  const ws = WS4Redis({ uri: 'ws://h/ws/a', ...r.options });
  assert.equal(r.calls.connecting, 1);
  assert.ok(ws.is_connecting());
  assert.equal(ws.send_message('early'), false, 'nothing is sent (nor thrown) while connecting');
  sockets[0].open();
  assert.ok(ws.is_connected());
  assert.equal(r.calls.connected, 1);
  assert.equal(ws.send_message('hello'), true);
  assert.deepEqual(sockets[0].sent, ['hello']);
  sockets[0].receive('news');
  assert.deepEqual(r.calls.messages, ['news']);
  ws.close();
  assert.ok(ws.is_closed());
  assert.equal(r.calls.disconnected.length, 1);
});

test('heartbeats: sent on a timer, never handed to receive_message, any frame counts as life', () => {
  const { WS4Redis, clock, sockets } = load();
  const r = recorder();
  WS4Redis({ uri: 'ws://h/ws/a', heartbeat_msg: '--heartbeat--', ...r.options });
  sockets[0].open();
  clock.advance(5000);
  assert.deepEqual(sockets[0].sent, ['--heartbeat--']);
  sockets[0].receive('--heartbeat--');
  sockets[0].receive('real');
  assert.deepEqual(r.calls.messages, ['real']);
  for (let i = 0; i < 10; i++) {
    clock.advance(5000);
    sockets[0].receive(i % 2 ? '--heartbeat--' : 'traffic');
  }
  assert.equal(sockets.length, 1, 'an answering server keeps the socket');
});

test('after max_missed_heartbeats unanswered heartbeats the socket is dropped and replaced', () => {
  const { WS4Redis, clock, sockets } = load({ random: () => 0 });
  const r = recorder();
  const ws = WS4Redis({ uri: 'ws://h/ws/a', heartbeat_msg: '--hb--', max_missed_heartbeats: 2, ...r.options });
  sockets[0].open();
  clock.advance(10_000);
  assert.deepEqual(sockets[0].sent, ['--hb--', '--hb--']);
  assert.equal(sockets[0].closedWith, null);
  clock.advance(5000);
  assert.equal(sockets[0].closedWith.code, 4000, 'the third tick gives up');
  assert.equal(r.calls.disconnected.length, 1);
  assert.equal(r.calls.disconnected[0].code, 4000);
  assert.ok(ws.is_closed());
  clock.advance(100);
  assert.equal(sockets.length, 2, 'a new socket is opened after the backoff');
  assert.equal(r.calls.connecting, 2);
});

test('the heartbeat timer stops on every close (ws4redis kept it running against the next socket)', () => {
  const { WS4Redis, clock, sockets } = load({ random: () => 0.999 });
  const r = recorder();
  WS4Redis({ uri: 'ws://h/ws/a', heartbeat_msg: '--hb--', ...r.options });
  sockets[0].open();
  clock.advance(4000);
  sockets[0].drop();
  clock.advance(450);
  assert.equal(sockets.length, 1, 'still waiting out the backoff');
  clock.advance(100);
  assert.equal(sockets.length, 2);
  // The new socket stays in CONNECTING for a long time: no old timer may close it.
  clock.advance(60_000);
  assert.equal(sockets[1].closedWith, null);
  assert.equal(sockets[0].sent.length, 0);
  assert.equal(clock.timers.size, 0, 'no heartbeat timer while not connected');
});

test('reconnect delays: exponential with full jitter, capped, floored, reset after a stable connection', () => {
  const { WS4Redis } = load();
  const opts = WS4Redis.defaults;
  const top = (k) => WS4Redis.backoff_delay(k, opts, () => 0.999999);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map(top), [499, 999, 1999, 3999, 7999, 15999, 29999, 29999]);
  assert.equal(WS4Redis.backoff_delay(3, opts, () => 0), 100, 'never sooner than reconnect_min');
  assert.equal(WS4Redis.backoff_delay(3, opts, () => 0.5), 2000);

  const { WS4Redis: W, clock, sockets } = load({ random: () => 0.999999 });
  const ws = W({ uri: 'ws://h/ws/a' });
  sockets[0].drop();
  assert.equal(ws.reconnect_delay, 499);
  clock.advance(499);
  sockets[1].drop();
  assert.equal(ws.reconnect_delay, 999);
  clock.advance(999);
  sockets[2].open();
  clock.advance(1000);
  sockets[2].drop();
  assert.equal(ws.reconnect_delay, 1999, 'a short-lived connection does not reset the backoff');
  clock.advance(1999);
  sockets[3].open();
  clock.advance(6000);
  sockets[3].drop();
  assert.equal(ws.reconnect_delay, 499, 'a connection that stayed up resets it');
});

test('close() stops reconnecting, also while waiting to reconnect', () => {
  const { WS4Redis, clock, sockets } = load();
  const ws = WS4Redis({ uri: 'ws://h/ws/a', heartbeat_msg: '--hb--' });
  sockets[0].open();
  sockets[0].drop();
  ws.close();
  clock.advance(120_000);
  assert.equal(sockets.length, 1);
  assert.equal(clock.timers.size, 0);
});

test('a constructor that throws is retried', () => {
  const { WS4Redis, clock, sockets } = load({ random: () => 0 });
  const Real = WS4Redis.env.WebSocket;
  let fail = true;
  WS4Redis.env.WebSocket = function (url) {
    if (fail) throw new Error('boom');
    return new Real(url);
  };
  const r = recorder();
  const ws = WS4Redis({ uri: 'ws://h/ws/a', ...r.options });
  assert.ok(ws.is_closed());
  fail = false;
  clock.advance(100);
  assert.equal(sockets.length, 1);
  assert.equal(r.calls.connecting, 2);
});

// --- recovery (`recover: true`) -------------------------------------------------------------

const E1 = '3f9a1c07b2e4d611';
const E2 = '8be0aa13c9f2d470';
const E3 = '0123456789abcdef';
const json = (value) => JSON.stringify(value);
/** A copy in this realm (objects made inside the client's vm context have other prototypes). */
const plain = (value) => JSON.parse(JSON.stringify(value));
const position = (epoch, offset, extra = {}) => json({ type: 'position', audience: 'broadcast', epoch, offset, ...extra });
const message = (epoch, offset, data, extra = {}) => json({ type: 'message', audience: 'broadcast', epoch, offset, data, ...extra });

function recovering(options = {}) {
  const loaded = load({ random: () => 0 });
  const r = recorder();
  const failures = [];
  const ws = loaded.WS4Redis({
    uri: 'ws://h/ws/chat?subscribe-broadcast',
    heartbeat_msg: '--heartbeat--',
    recover: true,
    recovery_failed: (info) => failures.push(info),
    ...r.options,
    ...options,
  });
  return { ...loaded, ws, calls: r.calls, failures };
}

test('recover_uri: the recover key after the flags, empty or with one token per epoch', () => {
  const { WS4Redis } = load();
  const uri = WS4Redis.recover_uri;
  assert.equal(uri('ws://h/ws/chat?subscribe-broadcast', {}), 'ws://h/ws/chat?subscribe-broadcast&recover');
  assert.equal(uri('ws://h/ws/chat', {}), 'ws://h/ws/chat?recover');
  assert.equal(uri('ws://h/ws/chat?', {}), 'ws://h/ws/chat?recover');
  assert.equal(uri('ws://h/ws/chat?a&', { [E1]: 0 }), `ws://h/ws/chat?a&recover=${E1}:0`);
  assert.equal(uri('ws://h/ws/chat?a#x', { [E1]: 42, [E2]: 7 }), `ws://h/ws/chat?a&recover=${E1}:42,${E2}:7#x`);
});

test('classify_frame: envelopes, statuses and everything else', () => {
  const { WS4Redis } = load();
  const kind = (data) => WS4Redis.classify_frame(data).kind;
  assert.equal(kind(message(E1, 1, 'x')), 'message');
  assert.equal(kind(json({ type: 'message', audience: 'user', data: 'x' })), 'message');
  assert.equal(kind(position(E1, 0)), 'status');
  assert.equal(kind(json({ type: 'recovered', audience: 'group', group: 'g', epoch: E1, offset: 3, missed: 0 })), 'status');
  assert.equal(kind(json({ type: 'gap', audience: 'broadcast', reason: 'too-old', epoch: E1, offset: 9 })), 'status');
  for (const raw of ['hello', '{"type":"game","game":{}}', '{"type":"message","data":"no audience"}', '{broken', '[1]', 'null']) {
    assert.equal(kind(raw), 'raw', raw);
  }
});

test('recover: first connection asks with an empty recover; payloads stripped, statuses kept from the page', () => {
  const { sockets, calls, failures, ws } = recovering();
  assert.equal(sockets[0].url, 'ws://h/ws/chat?subscribe-broadcast&recover');
  sockets[0].open();
  sockets[0].receive(position(E1, 42));
  sockets[0].receive('--heartbeat--');
  sockets[0].receive(message(E1, 43, 'first'));
  sockets[0].receive(message(E1, 44, '{"type":"move"}'));
  sockets[0].receive(json({ type: 'message', audience: 'broadcast', data: 'plain PUBLISH' }));
  assert.deepEqual(calls.messages, ['first', '{"type":"move"}', 'plain PUBLISH']);
  assert.deepEqual(plain(failures), []);
  assert.deepEqual(plain(ws.positions()), { [E1]: 44 });
});

test('recover: every reconnection sends the highest offset per epoch and gets the missed messages', () => {
  const { sockets, clock, calls, failures, ws } = recovering();
  sockets[0].open();
  sockets[0].receive(position(E1, 0));
  sockets[0].receive(position(E2, 5, { audience: 'user' }));
  sockets[0].receive(message(E1, 1, 'a'));
  sockets[0].receive(message(E2, 6, 'b', { audience: 'user' }));
  sockets[0].drop();
  clock.advance(100);
  assert.equal(sockets[1].url, `ws://h/ws/chat?subscribe-broadcast&recover=${E1}:1,${E2}:6`);
  sockets[1].open();
  sockets[1].receive(json({ type: 'recovered', audience: 'broadcast', epoch: E1, offset: 1, missed: 2 }));
  sockets[1].receive(message(E1, 2, 'c'));
  sockets[1].receive(message(E1, 3, 'd'));
  sockets[1].receive(json({ type: 'recovered', audience: 'user', epoch: E2, offset: 6, missed: 0 }));
  sockets[1].receive(message(E2, 7, 'e', { audience: 'user' }));
  assert.deepEqual(calls.messages, ['a', 'b', 'c', 'd', 'e']);
  assert.deepEqual(plain(failures), []);
  sockets[1].drop();
  clock.advance(100);
  assert.equal(sockets[2].url, `ws://h/ws/chat?subscribe-broadcast&recover=${E1}:3,${E2}:7`, 'and again on the next one');
  assert.equal(ws.uri, 'ws://h/ws/chat?subscribe-broadcast', 'the uri the page gave is kept');
});

test('recover: a message seen before is not handed on twice', () => {
  const { sockets, calls, ws } = recovering();
  sockets[0].open();
  sockets[0].receive(position(E1, 10));
  sockets[0].receive(message(E1, 10, 'old'));
  sockets[0].receive(message(E1, 11, 'new'));
  sockets[0].receive(message(E1, 11, 'new again'));
  assert.deepEqual(calls.messages, ['new']);
  assert.equal(ws.duplicates_dropped, 2);
});

test('recover: a gap calls recovery_failed with the gap, then continues from its position', () => {
  const { sockets, clock, calls, failures, ws } = recovering();
  sockets[0].open();
  sockets[0].receive(position(E1, 4));
  sockets[0].drop();
  clock.advance(100);
  assert.match(sockets[1].url, new RegExp(`recover=${E1}:4$`));
  sockets[1].open();
  const gap = { type: 'gap', audience: 'broadcast', reason: 'epoch-changed', epoch: E3, offset: 0 };
  sockets[1].receive(json(gap));
  sockets[1].receive(message(E3, 1, 'after the gap'));
  assert.deepEqual(plain(failures), [gap]);
  assert.deepEqual(calls.messages, ['after the gap']);
  assert.deepEqual(plain(ws.positions()), { [E3]: 1 }, 'the channel\'s old epoch is forgotten');
  sockets[1].drop();
  clock.advance(100);
  assert.match(sockets[2].url, new RegExp(`recover=${E3}:1$`));
});

test('recover: a too-old gap in the same epoch moves the position forward', () => {
  const { sockets, clock, failures, ws } = recovering();
  sockets[0].open();
  sockets[0].receive(position(E1, 4));
  sockets[0].drop();
  clock.advance(100);
  sockets[1].open();
  sockets[1].receive(json({ type: 'gap', audience: 'broadcast', reason: 'too-old', epoch: E1, offset: 900 }));
  assert.equal(failures.length, 1);
  assert.equal(failures[0].reason, 'too-old');
  assert.deepEqual(plain(ws.positions()), { [E1]: 900 });
});

test('recover: a facility without history fails recovery on every reconnection', () => {
  const { sockets, clock, calls, failures, ws } = recovering();
  sockets[0].open();
  sockets[0].receive(json({ type: 'position', audience: 'broadcast', epoch: null, offset: null }));
  sockets[0].receive(json({ type: 'message', audience: 'broadcast', data: 'live' }));
  assert.deepEqual(plain(failures), [], 'the first connection is no gap');
  assert.deepEqual(plain(ws.positions()), {});
  sockets[0].drop();
  clock.advance(100);
  assert.equal(sockets[1].url, 'ws://h/ws/chat?subscribe-broadcast&recover', 'nothing to send');
  sockets[1].open();
  sockets[1].receive(json({ type: 'position', audience: 'broadcast', epoch: null, offset: null }));
  assert.deepEqual(plain(failures), [{ type: 'gap', audience: 'broadcast', reason: 'no-history', epoch: null, offset: null }]);
  sockets[1].receive(json({ type: 'gap', audience: 'broadcast', reason: 'no-history', epoch: null, offset: null }));
  assert.equal(failures.length, 2, 'and the server\'s own gap the same way');
  assert.deepEqual(calls.messages, ['live']);
});

test('recover: a reconnection before any status arrived reports the fresh position as a gap', () => {
  const { sockets, clock, failures, ws } = recovering();
  sockets[0].open();
  sockets[0].drop();
  clock.advance(100);
  assert.equal(sockets[1].url, 'ws://h/ws/chat?subscribe-broadcast&recover');
  sockets[1].open();
  sockets[1].receive(position(E1, 8, { audience: 'group', group: 'admins' }));
  assert.deepEqual(plain(failures), [
    { type: 'gap', audience: 'group', reason: 'epoch-changed', epoch: E1, offset: 8, group: 'admins' },
  ]);
  assert.deepEqual(plain(ws.positions()), { [E1]: 8 });
});

test('recover: a first connection that never opened is still a first connection', () => {
  const { sockets, clock, failures } = recovering();
  sockets[0].drop();
  clock.advance(100);
  sockets[1].open();
  sockets[1].receive(position(E1, 0));
  assert.deepEqual(plain(failures), []);
});

test('recover: bare frames from a server that ignores recover reach receive_message unchanged', () => {
  const { sockets, calls, failures } = recovering();
  sockets[0].open();
  sockets[0].receive('plain');
  sockets[0].receive('{"type":"game"}');
  assert.deepEqual(calls.messages, ['plain', '{"type":"game"}']);
  assert.deepEqual(plain(failures), []);
});

test('without recover: no recover key, and recovery-shaped frames are passed on as they are', () => {
  const { WS4Redis, sockets, clock } = load({ random: () => 0 });
  const r = recorder();
  WS4Redis({ uri: 'ws://h/ws/chat?subscribe-broadcast', ...r.options });
  sockets[0].open();
  sockets[0].receive(position(E1, 1));
  sockets[0].receive(message(E1, 2, 'x'));
  assert.deepEqual(r.calls.messages, [position(E1, 1), message(E1, 2, 'x')]);
  sockets[0].drop();
  clock.advance(100);
  assert.equal(sockets[1].url, 'ws://h/ws/chat?subscribe-broadcast');
});

test('recover: heartbeats, backoff and close behave as without it', () => {
  const { sockets, clock, calls, ws } = recovering({ heartbeat_msg: '--hb--', max_missed_heartbeats: 2 });
  sockets[0].open();
  clock.advance(10_000);
  assert.deepEqual(sockets[0].sent, ['--hb--', '--hb--']);
  sockets[0].receive('--hb--');
  clock.advance(5000);
  assert.equal(sockets[0].closedWith, null, 'an answered heartbeat keeps the socket');
  clock.advance(10_000);
  assert.equal(sockets[0].closedWith.code, 4000);
  assert.equal(ws.reconnect_delay, 100);
  clock.advance(100);
  assert.equal(sockets.length, 2);
  ws.close();
  clock.advance(60_000);
  assert.equal(sockets.length, 2);
  assert.deepEqual(calls.messages, []);
});
