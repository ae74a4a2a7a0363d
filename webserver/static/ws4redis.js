/*
 * ws4redis.js, Crier's edition: the websocket client of django-websocket-redis, API-compatible
 * (WS4Redis({uri, receive_message, heartbeat_msg, connecting, connected, disconnected}),
 * send_message, close, get_state, is_connecting, is_connected, is_closing, is_closed), without
 * jQuery (an optional second argument, ws4redis' `$`, is accepted and ignored), and with its
 * known defects fixed:
 *
 * - reconnects with exponential backoff and full jitter: the k-th retry in a row waits a random
 *   time in [reconnect_min, min(reconnect_max, reconnect_base * 2^k)] (0.1 s floor, 0.5 s
 *   doubling up to 30 s by default); the count starts again once a connection stayed open for
 *   stable_after ms, so a server that accepts and drops at once is not hammered;
 * - with heartbeat_msg set, sends it every heartbeat_interval ms; any frame from the server
 *   counts as a sign of life, and after max_missed_heartbeats unanswered heartbeats (default 3)
 *   the socket is dropped and replaced;
 * - the heartbeat timer is stopped on every close (ws4redis kept it ticking against the next
 *   socket);
 * - heartbeats are never handed to receive_message;
 * - relative URIs ('/ws/chat?subscribe-broadcast') are resolved against the page, and on an
 *   https page the socket is always wss://.
 *
 * Recovery (`recover: true`, Crier's protocol; README "Recovery"): the socket asks for
 * `recover` on its first connection and `recover=<epoch>:<offset>,...` (the highest offset seen
 * per history epoch) on every reconnection, so that wsserver sends what was published while it
 * was away. The JSON envelope is stripped: receive_message gets each message's payload, in
 * order and at most once; status objects never reach it. `recovery_failed(info)` is called when
 * what was missed cannot be sent (a `gap` status; info is the parsed object) — the page then
 * reloads its state. A reconnection that had no position to send (the facility keeps no
 * history, or no status had arrived yet) reports the server's `position` answer the same way,
 * as a gap with the reason the server gives when it has no token to serve ("no-history" or
 * "epoch-changed"). Frames that are not recovery objects (a server that ignores `recover`)
 * reach receive_message unchanged.
 *
 * No build step: load it with <script src="/static/ws4redis.js"></script>; it defines the
 * global WS4Redis (and module.exports under CommonJS, for tests).
 */
(function (root) {
  'use strict';

  var CONNECTING = 0;
  var OPEN = 1;
  var CLOSING = 2;
  var CLOSED = 3;

  var DEFAULTS = {
    uri: null,
    heartbeat_msg: null,
    heartbeat_interval: 5000,
    max_missed_heartbeats: 3,
    reconnect_base: 500,
    reconnect_max: 30000,
    reconnect_min: 100,
    stable_after: 5000,
    recover: false,
    connecting: null,
    connected: null,
    receive_message: null,
    disconnected: null,
    recovery_failed: null
  };

  var STATUS_TYPES = { position: true, recovered: true, gap: true };

  /** ws:// or wss:// URL for `uri` seen from page `loc` (window.location, may be missing). */
  function resolveUri(uri, loc) {
    var secure = !!loc && loc.protocol === 'https:';
    var url;
    if (/^wss?:\/\//i.test(uri)) {
      url = uri;
    } else if (/^https?:\/\//i.test(uri)) {
      url = uri.replace(/^http/i, 'ws');
    } else {
      if (!loc || !loc.href) {
        throw new Error('WS4Redis: cannot resolve the relative uri ' + uri + ' without a page location');
      }
      url = new URL(uri, loc.href).href.replace(/^http/i, 'ws');
    }
    if (secure) {
      url = url.replace(/^ws:/i, 'wss:');
    }
    return url;
  }

  /** Delay before the retry number `attempt` (0-based): full jitter under a capped exponential. */
  function backoffDelay(attempt, opts, random) {
    var window = Math.min(opts.reconnect_max, opts.reconnect_base * Math.pow(2, attempt));
    return Math.max(opts.reconnect_min, Math.floor(random() * window));
  }

  /** `url` with the `recover` query key: empty without positions, else one token per epoch. */
  function recoverUri(url, positions) {
    var tokens = [];
    for (var epoch in positions) {
      if (Object.prototype.hasOwnProperty.call(positions, epoch)) {
        tokens.push(epoch + ':' + positions[epoch]);
      }
    }
    var hash = url.indexOf('#');
    var fragment = hash >= 0 ? url.slice(hash) : '';
    var base = hash >= 0 ? url.slice(0, hash) : url;
    var sep = base.indexOf('?') < 0 ? '?' : /[?&]$/.test(base) ? '' : '&';
    return base + sep + 'recover' + (tokens.length ? '=' + tokens.join(',') : '') + fragment;
  }

  /**
   * What a frame on an opted-in socket is: {kind: 'status', status}, {kind: 'message', message}
   * (the envelope, its payload in message.data), or {kind: 'raw'} for anything else (a server
   * that ignored `recover` sends bare ws4redis payloads).
   */
  function classifyFrame(data) {
    if (typeof data !== 'string' || data.charAt(0) !== '{') {
      return { kind: 'raw' };
    }
    var value;
    try {
      value = JSON.parse(data);
    } catch (e) {
      return { kind: 'raw' };
    }
    if (!value || typeof value !== 'object' || typeof value.audience !== 'string') {
      return { kind: 'raw' };
    }
    if (value.type === 'message' && typeof value.data === 'string') {
      return { kind: 'message', message: value };
    }
    if (STATUS_TYPES[value.type] === true) {
      return { kind: 'status', status: value };
    }
    return { kind: 'raw' };
  }

  /** An epoch as the server writes it (16 lower-case hex digits), or null. */
  function epochOf(value) {
    return typeof value === 'string' && /^[0-9a-f]{16}$/.test(value) ? value : null;
  }

  /** An offset as the server writes it (a non-negative integer), or null. */
  function offsetOf(value) {
    return typeof value === 'number' && value >= 0 && Math.floor(value) === value ? value : null;
  }

  /**
   * A socket's recovery positions: the highest offset seen per epoch, one epoch per channel (a
   * channel is named by its audience and group; its old epoch is forgotten when a new one
   * shows up).
   */
  function Positions() {
    this.byEpoch = {};
    this.epochOfChannel = {};
  }

  Positions.channelKey = function (obj) {
    return obj.audience + (typeof obj.group === 'string' ? ':' + obj.group : '');
  };

  /** Records `offset` in `epoch` for the channel of `obj`; returns the previous offset (or null). */
  Positions.prototype.advance = function (obj, epoch, offset) {
    var channel = Positions.channelKey(obj);
    var old = this.epochOfChannel[channel];
    if (old !== undefined && old !== epoch) {
      delete this.byEpoch[old];
    }
    this.epochOfChannel[channel] = epoch;
    var seen = Object.prototype.hasOwnProperty.call(this.byEpoch, epoch) ? this.byEpoch[epoch] : null;
    if (seen === null || offset > seen) {
      this.byEpoch[epoch] = offset;
    }
    return seen;
  };

  /** Whether a message at `offset` in `epoch` was already seen. */
  Positions.prototype.seen = function (epoch, offset) {
    return Object.prototype.hasOwnProperty.call(this.byEpoch, epoch) && offset <= this.byEpoch[epoch];
  };

  /** Forgets the channel of `obj` (its facility keeps no history now). */
  Positions.prototype.forget = function (obj) {
    var channel = Positions.channelKey(obj);
    var old = this.epochOfChannel[channel];
    if (old !== undefined) {
      delete this.byEpoch[old];
      delete this.epochOfChannel[channel];
    }
  };

  Positions.prototype.snapshot = function () {
    var copy = {};
    for (var epoch in this.byEpoch) {
      if (Object.prototype.hasOwnProperty.call(this.byEpoch, epoch)) copy[epoch] = this.byEpoch[epoch];
    }
    return copy;
  };

  function WS4Redis(options, $) {
    if (!(this instanceof WS4Redis)) {
      return new WS4Redis(options, $);
    }
    var opts = {};
    var key;
    for (key in DEFAULTS) {
      if (Object.prototype.hasOwnProperty.call(DEFAULTS, key)) {
        opts[key] = DEFAULTS[key];
      }
    }
    for (key in options || {}) {
      if (Object.prototype.hasOwnProperty.call(options, key) && options[key] !== undefined) {
        opts[key] = options[key];
      }
    }
    if (!opts.uri) {
      throw new Error('No Websocket URI in options');
    }
    if (opts.heartbeat_msg === '') {
      opts.heartbeat_msg = null;
    }

    var self = this;
    var env = WS4Redis.env;
    var url = resolveUri(opts.uri, env.location());
    var ws = null;
    var attempts = 0;
    var openedAt = 0;
    var missed = 0;
    var heartbeatTimer = null;
    var reconnectTimer = null;
    var closedByUser = false;
    var positions = new Positions();
    var everOpened = false;

    function call(fn, arg) {
      if (typeof fn === 'function') {
        try {
          fn(arg);
        } catch (e) {
          if (root.console) root.console.error('WS4Redis callback failed:', e);
        }
      }
    }

    function stopHeartbeat() {
      if (heartbeatTimer !== null) {
        env.clearInterval(heartbeatTimer);
        heartbeatTimer = null;
      }
      missed = 0;
    }

    function startHeartbeat() {
      stopHeartbeat();
      if (opts.heartbeat_msg !== null && opts.heartbeat_interval > 0) {
        heartbeatTimer = env.setInterval(beat, opts.heartbeat_interval);
      }
    }

    function beat() {
      if (!ws || ws.readyState !== OPEN) {
        return;
      }
      if (missed >= opts.max_missed_heartbeats) {
        drop(4000, 'missed ' + missed + ' heartbeats');
        return;
      }
      missed += 1;
      try {
        ws.send(opts.heartbeat_msg);
      } catch (e) {
        /* the close event follows */
      }
    }

    function scheduleReconnect() {
      if (closedByUser || reconnectTimer !== null) {
        return;
      }
      var delay = backoffDelay(attempts, opts, env.random);
      attempts += 1;
      self.reconnect_delay = delay;
      reconnectTimer = env.setTimeout(connect, delay);
    }

    /** Everything that follows the end of a socket, whoever ended it. */
    function closed(evt) {
      stopHeartbeat();
      ws = null;
      if (openedAt && env.now() - openedAt >= opts.stable_after) {
        attempts = 0;
      }
      openedAt = 0;
      call(opts.disconnected, evt);
      scheduleReconnect();
    }

    /**
     * Applies a status object of the socket described by `conn` (conn.reconnect: a socket had
     * been open before this one).
     */
    function applyStatus(status, conn) {
      var epoch = epochOf(status.epoch);
      var offset = offsetOf(status.offset);
      if (epoch !== null && offset !== null) {
        positions.advance(status, epoch, offset);
      } else {
        positions.forget(status);
      }
      if (status.type === 'gap') {
        call(opts.recovery_failed, status);
      } else if (status.type === 'position' && conn.reconnect) {
        var gap = {
          type: 'gap',
          audience: status.audience,
          reason: epoch === null ? 'no-history' : 'epoch-changed',
          epoch: epoch,
          offset: offset
        };
        if (typeof status.group === 'string') gap.group = status.group;
        call(opts.recovery_failed, gap);
      }
    }

    /** Hands a frame of an opted-in socket to the page: payloads once each, statuses never. */
    function receiveRecovering(data, conn) {
      var frame = classifyFrame(data);
      if (frame.kind === 'status') {
        applyStatus(frame.status, conn);
        return;
      }
      if (frame.kind === 'message') {
        var message = frame.message;
        var epoch = epochOf(message.epoch);
        var offset = offsetOf(message.offset);
        if (epoch !== null && offset !== null) {
          if (positions.seen(epoch, offset)) {
            self.duplicates_dropped += 1;
            return;
          }
          positions.advance(message, epoch, offset);
        }
        call(opts.receive_message, message.data);
        return;
      }
      call(opts.receive_message, data);
    }

    /** Gives up on the current socket at once (a dead peer may never finish a close handshake). */
    function drop(code, reason) {
      var sock = ws;
      if (!sock) {
        return;
      }
      sock.onopen = sock.onmessage = sock.onerror = sock.onclose = null;
      try {
        sock.close(code, reason);
      } catch (e) {
        /* already closing */
      }
      closed({ type: 'close', code: code, reason: reason, wasClean: false, target: sock });
    }

    function connect() {
      reconnectTimer = null;
      if (closedByUser) {
        return;
      }
      call(opts.connecting);
      var sock;
      var conn = { reconnect: everOpened };
      try {
        sock = new env.WebSocket(opts.recover ? recoverUri(url, positions.snapshot()) : url);
      } catch (e) {
        if (root.console) root.console.error('WS4Redis: cannot open ' + url + ':', e);
        scheduleReconnect();
        return;
      }
      ws = sock;
      sock.onopen = function (evt) {
        if (sock !== ws) return;
        openedAt = env.now();
        everOpened = true;
        startHeartbeat();
        call(opts.connected, evt);
      };
      sock.onmessage = function (evt) {
        if (sock !== ws) return;
        missed = 0;
        if (opts.heartbeat_msg !== null && evt.data === opts.heartbeat_msg) {
          return;
        }
        if (opts.recover) {
          receiveRecovering(evt.data, conn);
        } else {
          call(opts.receive_message, evt.data);
        }
      };
      sock.onerror = function () {
        /* a close event always follows an error */
      };
      sock.onclose = function (evt) {
        if (sock !== ws) return;
        closed(evt);
      };
    }

    /** Sends a frame when connected; returns whether it was sent (never throws). */
    this.send_message = function (message) {
      if (ws && ws.readyState === OPEN) {
        ws.send(message);
        return true;
      }
      return false;
    };

    /** Closes for good: no reconnect, no heartbeats. */
    this.close = function () {
      closedByUser = true;
      if (reconnectTimer !== null) {
        env.clearTimeout(reconnectTimer);
        reconnectTimer = null;
      }
      stopHeartbeat();
      if (ws) {
        ws.close();
      }
    };

    this.get_state = function () {
      return ws ? ws.readyState : CLOSED;
    };
    this.is_connecting = function () {
      return self.get_state() === CONNECTING;
    };
    this.is_connected = function () {
      return self.get_state() === OPEN;
    };
    this.is_closing = function () {
      return self.get_state() === CLOSING;
    };
    this.is_closed = function () {
      return self.get_state() === CLOSED;
    };

    /** Retries now instead of waiting out the backoff (e.g. when the browser is back online). */
    this.reconnect_now = function () {
      if (reconnectTimer !== null) {
        env.clearTimeout(reconnectTimer);
        reconnectTimer = null;
        connect();
      }
    };

    /** With `recover`: the positions the next reconnection sends (epoch -> highest offset). */
    this.positions = function () {
      return positions.snapshot();
    };

    this.uri = url;
    this.options = opts;
    this.duplicates_dropped = 0;
    env.onOnline(this.reconnect_now);
    connect();
  }

  WS4Redis.CONNECTING = CONNECTING;
  WS4Redis.OPEN = OPEN;
  WS4Redis.CLOSING = CLOSING;
  WS4Redis.CLOSED = CLOSED;
  WS4Redis.resolve_uri = resolveUri;
  WS4Redis.backoff_delay = backoffDelay;
  WS4Redis.defaults = DEFAULTS;
  WS4Redis.recover_uri = recoverUri;
  WS4Redis.classify_frame = classifyFrame;

  /** What the client uses from its surroundings; tests replace parts of it. */
  WS4Redis.env = {
    WebSocket: root.WebSocket,
    location: function () {
      return root.location;
    },
    setTimeout: function (fn, ms) {
      return root.setTimeout(fn, ms);
    },
    clearTimeout: function (id) {
      root.clearTimeout(id);
    },
    setInterval: function (fn, ms) {
      return root.setInterval(fn, ms);
    },
    clearInterval: function (id) {
      root.clearInterval(id);
    },
    random: Math.random,
    now: function () {
      return Date.now();
    },
    onOnline: function (fn) {
      if (typeof root.addEventListener === 'function') {
        root.addEventListener('online', fn);
      }
    }
  };

  root.WS4Redis = WS4Redis;
  if (typeof module === 'object' && module && module.exports) {
    module.exports = WS4Redis;
  }
})(typeof window !== 'undefined' ? window : globalThis);
