/*
 * crier.js: what every Crier page shares. Loaded after ws4redis.js, before the page's own
 * script; defines window.Crier:
 *
 * - Crier.user, Crier.csrf: from <meta name="crier-user"> and <meta name="csrf-token">;
 * - Crier.socket(facilityAndFlags, callbacks): a WS4Redis client on the page's websocket URL
 *   (<meta name="crier-websocket">) with its heartbeat (<meta name="crier-heartbeat">), in
 *   recovery mode (what was published while the socket was down arrives after the reconnect);
 *   callbacks.load fetches the page's state: when the socket first opens and whenever what it
 *   missed cannot be recovered; the header's connection indicator (#conn) shows whether all of
 *   the page's sockets are open;
 * - Crier.api(method, path, body): fetch with the CSRF token in X-CSRF-Token and JSON in and
 *   out; rejects with an Error whose message is the server's {"error": ...} text;
 * - Crier.toast(text, options): a message in the page's live region (#toasts).
 *
 * It also subscribes the page to site notices (broadcast on the facility "notices") and shows
 * each one as a toast.
 */
(function () {
  'use strict';

  function meta(name) {
    var el = document.querySelector('meta[name="' + name + '"]');
    return el ? el.getAttribute('content') : null;
  }

  var Crier = {
    user: meta('crier-user'),
    csrf: meta('csrf-token'),
    websocket: meta('crier-websocket') || '/ws/',
    heartbeat: meta('crier-heartbeat') || null,
    sockets: []
  };

  // --- toasts -----------------------------------------------------------------------------

  var TOAST_MS = { info: 6000, success: 6000, notice: 15000, error: 12000 };

  /**
   * Shows `text` in the toast region. options: kind ('info' | 'success' | 'notice' | 'error'),
   * title, link ({href, text}), timeout (ms; 0 keeps it until dismissed).
   */
  Crier.toast = function (text, options) {
    options = options || {};
    var kind = options.kind || 'info';
    var region = document.getElementById('toasts');
    if (!region) {
      return null;
    }
    var toast = document.createElement('div');
    toast.className = 'toast toast-' + kind;
    if (kind === 'error') {
      toast.setAttribute('role', 'alert');
    }
    var body = document.createElement('div');
    body.className = 'toast-body';
    if (options.title) {
      var title = document.createElement('strong');
      title.className = 'toast-title';
      title.textContent = options.title;
      body.appendChild(title);
    }
    var message = document.createElement('span');
    message.className = 'toast-text';
    message.textContent = text;
    body.appendChild(message);
    if (options.link) {
      var link = document.createElement('a');
      link.href = options.link.href;
      link.textContent = options.link.text;
      body.appendChild(document.createTextNode(' '));
      body.appendChild(link);
    }
    toast.appendChild(body);
    var close = document.createElement('button');
    close.type = 'button';
    close.className = 'toast-close';
    close.setAttribute('aria-label', 'Dismiss');
    close.textContent = '\u00d7';
    close.addEventListener('click', function () {
      remove();
    });
    toast.appendChild(close);
    region.appendChild(toast);
    var timeout = options.timeout !== undefined ? options.timeout : TOAST_MS[kind] || 6000;
    var timer = timeout > 0 ? window.setTimeout(remove, timeout) : null;
    function remove() {
      if (timer !== null) {
        window.clearTimeout(timer);
      }
      if (toast.parentNode) {
        toast.parentNode.removeChild(toast);
      }
    }
    return toast;
  };

  // --- JSON API ---------------------------------------------------------------------------

  Crier.api = function (method, path, body) {
    var init = { method: method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (method !== 'GET' && method !== 'HEAD') {
      init.headers['X-CSRF-Token'] = Crier.csrf || '';
    }
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return window.fetch(path, init).then(
      function (response) {
        return response.text().then(function (text) {
          var data = null;
          try {
            data = text ? JSON.parse(text) : {};
          } catch (e) {
            data = null;
          }
          if (!response.ok) {
            var message = data && data.error ? data.error : 'the server answered ' + response.status + ' ' + response.statusText;
            var error = new Error(message.charAt(0).toUpperCase() + message.slice(1));
            error.status = response.status;
            throw error;
          }
          if (data === null) {
            throw new Error('The server sent an answer this page does not understand.');
          }
          return data;
        });
      },
      function () {
        throw new Error('Cannot reach the server; check your connection and try again.');
      }
    );
  };

  // --- sockets and the connection indicator -----------------------------------------------

  function updateIndicator() {
    var el = document.getElementById('conn');
    if (!el || Crier.sockets.length === 0) {
      return;
    }
    var open = Crier.sockets.filter(function (s) {
      return s.is_connected();
    }).length;
    var state = open === Crier.sockets.length ? 'live' : Crier.everConnected ? 'reconnecting' : 'connecting';
    if (el.getAttribute('data-state') !== state) {
      el.setAttribute('data-state', state);
      el.textContent = state === 'live' ? 'Live' : state === 'reconnecting' ? 'Reconnecting…' : 'Connecting…';
    }
  }

  /**
   * A WS4Redis client for `facilityAndFlags` (e.g. 'lobby?subscribe-user'), with recovery
   * unless callbacks.recover is false. callbacks: receive_message(data); load(), which fetches
   * the state the messages update: called on the first open and on every recovery failure (a
   * reconnect that recovered everything fetches nothing), or on every open without recovery;
   * connecting, connected, disconnected, recovery_failed(info).
   */
  Crier.socket = function (facilityAndFlags, callbacks) {
    callbacks = callbacks || {};
    var loaded = false;
    function load() {
      loaded = true;
      if (callbacks.load) callbacks.load();
    }
    var socket = window.WS4Redis({
      uri: Crier.websocket + facilityAndFlags,
      heartbeat_msg: Crier.heartbeat,
      recover: callbacks.recover !== false,
      receive_message: callbacks.receive_message,
      recovery_failed: function (info) {
        if (callbacks.recovery_failed) callbacks.recovery_failed(info);
        load();
      },
      connecting: callbacks.connecting,
      connected: function (evt) {
        Crier.everConnected = true;
        updateIndicator();
        if (!loaded || callbacks.recover === false) load();
        if (callbacks.connected) callbacks.connected(evt);
      },
      disconnected: function (evt) {
        updateIndicator();
        if (callbacks.disconnected) callbacks.disconnected(evt);
      }
    });
    Crier.sockets.push(socket);
    updateIndicator();
    return socket;
  };

  /** Parses a JSON message; null for anything else. */
  Crier.parse = function (data) {
    try {
      var value = JSON.parse(data);
      return value && typeof value === 'object' ? value : null;
    } catch (e) {
      return null;
    }
  };

  // --- site notices -----------------------------------------------------------------------

  Crier.socket('notices?subscribe-broadcast', {
    receive_message: function (data) {
      var message = Crier.parse(data);
      if (message && message.type === 'notice' && typeof message.text === 'string') {
        Crier.toast(message.text, { kind: 'notice', title: 'Notice' });
      } else if (!message) {
        // Plain text, e.g. published with POST /api/publish or ws4redis' RedisPublisher.
        Crier.toast(String(data), { kind: 'notice', title: 'Notice' });
      }
    }
  });

  // Close the sockets when the page goes away; a page restored from the back/forward cache
  // is reloaded, so that it is live and current again.
  window.addEventListener('pagehide', function () {
    Crier.sockets.forEach(function (s) {
      s.close();
    });
  });
  window.addEventListener('pageshow', function (evt) {
    if (evt.persisted) {
      window.location.reload();
    }
  });

  window.Crier = Crier;
})();
