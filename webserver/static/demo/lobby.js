/*
 * lobby.js: the live part of the lobby (GET /).
 *
 * - Players online: the list from GET /api/presence/lobby, then join/leave events from the
 *   broadcast of the facility "presence/lobby" (fetched again on every reconnect; events that
 *   arrive while the list loads are applied after it).
 * - Being in the lobby: the socket on "lobby?subscribe-user" (wsserver records presence for it)
 *   carries invitations to and from this user; GET /api/invitations fills the list when it
 *   first connects and again only when a reconnect could not recover what was published
 *   meanwhile (an invitation sent while the socket was down arrives after the reconnect).
 * - Invite, accept, decline: JSON POSTs with the CSRF token; refusals are shown as messages.
 *   Accepting opens the game; the inviter's page opens it when the acceptance arrives.
 *
 * Lists are updated in place, so keyboard focus stays where it was when others come and go.
 */
(function () {
  'use strict';

  var Crier = window.Crier;
  var me = Crier.user;
  var online = {};
  var presenceLoaded = false;
  var presenceBuffer = null;
  var presenceGeneration = 0;
  var invitations = {};
  var invitationsLoaded = false;
  var busy = {};

  var playersEl = document.getElementById('players');
  var playersEmpty = document.getElementById('players-empty');
  var countEl = document.getElementById('online-count');
  var invitationsEl = document.getElementById('invitations');
  var invitationsEmpty = document.getElementById('invitations-empty');
  var liveEl = document.getElementById('lobby-live');

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function announce(text) {
    liveEl.textContent = text;
  }

  function values(map) {
    return Object.keys(map).map(function (k) {
      return map[k];
    });
  }

  /** Puts `nodes` into `parent` in this order, moving only what is out of place. */
  function arrange(parent, nodes) {
    nodes.forEach(function (node, i) {
      if (parent.children[i] !== node) {
        parent.insertBefore(node, parent.children[i] || null);
      }
    });
    while (parent.children.length > nodes.length) {
      parent.removeChild(parent.lastChild);
    }
  }

  // --- players ----------------------------------------------------------------------------

  function invitedByMe(user) {
    return values(invitations).some(function (i) {
      return i.status === 'pending' && i.from === me && i.to === user;
    });
  }

  var playerNodes = {};

  function playerNode(user) {
    var li = playerNodes[user];
    if (!li) {
      li = el('li', 'player');
      li.setAttribute('data-user', user);
      li.appendChild(el('span', 'name', user));
      if (user === me) {
        li.appendChild(el('span', 'you', '(you)'));
      } else {
        var button = el('button', 'invite');
        button.type = 'button';
        button.setAttribute('data-user', user);
        button.addEventListener('click', function () {
          invite(user);
        });
        li.appendChild(button);
      }
      playerNodes[user] = li;
    }
    var inviteButton = li.querySelector('button.invite');
    if (inviteButton) {
      var invited = invitedByMe(user);
      var label = invited ? 'Invited' : busy['invite:' + user] ? 'Inviting…' : 'Invite';
      if (inviteButton.textContent !== label) inviteButton.textContent = label;
      inviteButton.setAttribute('aria-label', invited ? 'Invited ' + user + '; waiting for an answer' : 'Invite ' + user + ' to a game');
      inviteButton.disabled = invited || !!busy['invite:' + user];
    }
    return li;
  }

  function renderPlayers() {
    var users = Object.keys(online).sort(function (a, b) {
      return a.localeCompare(b);
    });
    Object.keys(playerNodes).forEach(function (user) {
      if (!online[user]) delete playerNodes[user];
    });
    arrange(playersEl, users.map(playerNode));
    var others = users.filter(function (u) {
      return u !== me;
    }).length;
    countEl.textContent = presenceLoaded ? '(' + users.length + ')' : '';
    playersEmpty.hidden = others > 0;
    playersEmpty.textContent = presenceLoaded ? 'Nobody else is online right now.' : 'Looking for players…';
  }

  function applyPresence(event) {
    if (event.event === 'join') {
      online[event.user] = true;
    } else if (event.event === 'leave') {
      delete online[event.user];
    }
  }

  function loadPresence() {
    var generation = ++presenceGeneration;
    presenceBuffer = [];
    Crier.api('GET', '/api/presence/lobby').then(
      function (answer) {
        if (generation !== presenceGeneration) return;
        online = {};
        (answer.users || []).forEach(function (u) {
          online[u] = true;
        });
        var buffered = presenceBuffer || [];
        presenceBuffer = null;
        buffered.forEach(applyPresence);
        presenceLoaded = true;
        renderPlayers();
      },
      function (error) {
        if (generation !== presenceGeneration) return;
        presenceBuffer = null;
        Crier.toast('Could not load who is online: ' + error.message, { kind: 'error' });
      }
    );
  }

  function onPresence(data) {
    var event = Crier.parse(data);
    if (!event || typeof event.user !== 'string' || event.facility !== 'lobby') return;
    if (presenceBuffer) {
      presenceBuffer.push(event);
      return;
    }
    var was = !!online[event.user];
    applyPresence(event);
    renderPlayers();
    if (event.user !== me && was !== !!online[event.user]) {
      announce(event.user + (online[event.user] ? ' joined the lobby.' : ' left the lobby.'));
    }
  }

  // --- invitations ------------------------------------------------------------------------

  var invitationNodes = {};

  function isFinal(inv) {
    return inv.status === 'accepted' || inv.status === 'declined';
  }

  /** Stores an invitation's new state; a final answer is never replaced by an older pending one. */
  function upsert(inv) {
    var old = invitations[inv.id];
    if (old && isFinal(old) && !isFinal(inv)) return old;
    inv.expiresAt = Date.now() + (inv.expires_in || 0) * 1000;
    invitations[inv.id] = inv;
    return old;
  }

  function gameLink(inv) {
    var a = el('a', 'game-link', 'Open the game');
    a.href = inv.url;
    return a;
  }

  function fillInvitation(li, inv) {
    li.textContent = '';
    li.className = 'invitation invitation-' + inv.status + (inv.to === me ? ' incoming' : ' outgoing');
    var text = el('p', 'invitation-text');
    var other = inv.to === me ? inv.from : inv.to;
    var name = el('strong', null, other);
    if (inv.to === me) {
      if (inv.status === 'pending') {
        text.appendChild(name);
        text.appendChild(document.createTextNode(' invites you to a game.'));
        li.appendChild(text);
        var actions = el('div', 'actions');
        [['Accept', true], ['Decline', false]].forEach(function (pair) {
          var b = el('button', pair[1] ? 'accept' : 'decline secondary', pair[0]);
          b.type = 'button';
          b.setAttribute('aria-label', pair[0] + ' the invitation from ' + other);
          b.addEventListener('click', function () {
            answer(inv.id, pair[1], b);
          });
          actions.appendChild(b);
        });
        li.appendChild(actions);
        return;
      }
      text.appendChild(document.createTextNode(inv.status === 'accepted' ? 'You accepted the invitation from ' : 'You declined the invitation from '));
      text.appendChild(name);
      text.appendChild(document.createTextNode('.'));
    } else {
      if (inv.status === 'pending') {
        text.appendChild(document.createTextNode('You invited '));
        text.appendChild(name);
        text.appendChild(document.createTextNode('. Waiting for an answer…'));
      } else {
        text.appendChild(name);
        text.appendChild(document.createTextNode(inv.status === 'accepted' ? ' accepted your invitation.' : ' declined your invitation.'));
      }
    }
    li.appendChild(text);
    if (inv.status === 'accepted' && inv.url) {
      li.appendChild(gameLink(inv));
    }
  }

  function renderInvitations() {
    var now = Date.now();
    Object.keys(invitations).forEach(function (id) {
      if (invitations[id].expiresAt <= now) delete invitations[id];
    });
    var list = values(invitations).sort(function (a, b) {
      return b.created_ms - a.created_ms;
    });
    Object.keys(invitationNodes).forEach(function (id) {
      if (!invitations[id]) delete invitationNodes[id];
    });
    var nodes = list.map(function (inv) {
      var li = invitationNodes[inv.id];
      if (!li) {
        li = el('li');
        li.setAttribute('data-id', inv.id);
        invitationNodes[inv.id] = li;
      }
      if (li.getAttribute('data-status') !== inv.status) {
        li.setAttribute('data-status', inv.status);
        fillInvitation(li, inv);
      }
      return li;
    });
    arrange(invitationsEl, nodes);
    invitationsEmpty.hidden = nodes.length > 0;
    renderPlayers();
  }

  function loadInvitations() {
    Crier.api('GET', '/api/invitations').then(
      function (answer) {
        var fresh = {};
        (answer.invitations || []).forEach(function (inv) {
          var old = invitations[inv.id];
          fresh[inv.id] = old && isFinal(old) && !isFinal(inv) ? old : inv;
          fresh[inv.id].expiresAt = Date.now() + (inv.expires_in || 0) * 1000;
        });
        invitations = fresh;
        invitationsLoaded = true;
        renderInvitations();
      },
      function (error) {
        Crier.toast('Could not load your invitations: ' + error.message, { kind: 'error' });
      }
    );
  }

  function onLobbyMessage(data) {
    var message = Crier.parse(data);
    if (!message || message.type !== 'invitation' || !message.invitation) return;
    var inv = message.invitation;
    var old = upsert(inv);
    renderInvitations();
    var changed = !old || old.status !== inv.status;
    if (!changed) return;
    if (inv.to === me && inv.status === 'pending') {
      Crier.toast(inv.from + ' invites you to a game of tic-tac-toe.', { kind: 'info', title: 'Invitation' });
    } else if (inv.from === me && inv.status === 'declined') {
      Crier.toast(inv.to + ' declined your invitation.', { kind: 'info' });
    } else if (inv.from === me && inv.status === 'accepted' && inv.url) {
      Crier.toast(inv.to + ' accepted your invitation. Opening the game…', { kind: 'success' });
      window.location.assign(inv.url);
    }
  }

  // --- actions ----------------------------------------------------------------------------

  function invite(user) {
    busy['invite:' + user] = true;
    renderPlayers();
    Crier.api('POST', '/api/invite', { to: user })
      .then(function (answer) {
        upsert(answer.invitation);
        Crier.toast('Invitation sent to ' + user + '.', { kind: 'success' });
      })
      .catch(function (error) {
        Crier.toast(error.message, { kind: 'error', title: 'Invitation not sent' });
      })
      .then(function () {
        delete busy['invite:' + user];
        renderInvitations();
      });
  }

  function answer(id, accept, button) {
    var buttons = button.parentNode.querySelectorAll('button');
    Array.prototype.forEach.call(buttons, function (b) {
      b.disabled = true;
    });
    Crier.api('POST', '/api/invitations/' + encodeURIComponent(id) + '/' + (accept ? 'accept' : 'decline'))
      .then(function (reply) {
        upsert(reply.invitation);
        renderInvitations();
        if (accept && reply.url) {
          window.location.assign(reply.url);
        }
      })
      .catch(function (error) {
        Crier.toast(error.message, { kind: 'error', title: accept ? 'Could not accept' : 'Could not decline' });
        Array.prototype.forEach.call(buttons, function (b) {
          b.disabled = false;
        });
        loadInvitations();
      });
  }

  // --- wiring -----------------------------------------------------------------------------

  // Presence is a snapshot (who is online now), read again on every connect.
  Crier.socket('presence/lobby?subscribe-broadcast', { recover: false, load: loadPresence, receive_message: onPresence });
  Crier.socket('lobby?subscribe-user', { load: loadInvitations, receive_message: onLobbyMessage });
  window.setInterval(function () {
    if (invitationsLoaded) renderInvitations();
  }, 5000);
  renderPlayers();
})();
