/*
 * game.js: the live part of a game page (GET /game/<id>).
 *
 * The page renders from the game's JSON state: GET /api/games/<id> when the socket first
 * connects, then the states the server sends to this player on "game/<id>?subscribe-user"
 * after each move; a move made while the socket was down arrives after the reconnect, and the
 * state is fetched again only when the reconnect could not recover it. A state is applied
 * only if it has at least as many moves as the one shown, so replays and late answers are
 * harmless. A click (or Enter/Space; arrow keys move between squares) POSTs the square; the
 * server checks it and a refusal is shown next to the board.
 *
 * The page also keeps this player in the lobby (the "lobby?subscribe-user" socket), so others
 * see them online and their invitations show up here as messages.
 */
(function () {
  'use strict';

  var Crier = window.Crier;
  var me = Crier.user;
  var gameId = document.querySelector('meta[name="crier-game"]').getAttribute('content');
  var board = document.getElementById('board');
  var squares = Array.prototype.slice.call(board.querySelectorAll('button.square'));
  var turnEl = document.getElementById('turn');
  var messageEl = document.getElementById('game-message');
  var state = null;
  var sending = false;

  function label(i, mark) {
    return 'Row ' + (Math.floor(i / 3) + 1) + ', column ' + ((i % 3) + 1) + ': ' + (mark || 'empty');
  }

  function turnText(game) {
    if (game.status === 'playing') {
      return game.next === me ? 'Your turn: you play ' + game.turn + '.' : 'Waiting for ' + game.next + ' (' + game.turn + ') to move.';
    }
    if (game.status === 'won') {
      return game.winner === me ? 'You won!' : game.winner + ' won.';
    }
    return "It's a draw.";
  }

  function showMessage(text) {
    messageEl.textContent = text;
  }

  /** Shows `game` unless it is older than what is shown. Returns whether it did. */
  function render(game) {
    if (!game || game.id !== gameId) return false;
    if (state && game.moves.length < state.moves.length) return false;
    state = game;
    var line = game.line || [];
    squares.forEach(function (square, i) {
      var mark = game.board[i] || '';
      if (square.textContent !== mark) square.textContent = mark;
      square.setAttribute('aria-label', label(i, mark));
      square.classList.toggle('mark-x', mark === 'X');
      square.classList.toggle('mark-o', mark === 'O');
      square.classList.toggle('win', line.indexOf(i) >= 0);
    });
    var text = turnText(game);
    if (turnEl.textContent !== text) turnEl.textContent = text;
    turnEl.setAttribute('data-status', game.status);
    board.setAttribute('data-status', game.status);
    board.classList.toggle('my-turn', game.status === 'playing' && game.next === me);
    return true;
  }

  function load() {
    Crier.api('GET', '/api/games/' + gameId).then(
      function (answer) {
        render(answer.game);
      },
      function (error) {
        showMessage(error.message);
      }
    );
  }

  function play(square) {
    if (sending) return;
    sending = true;
    Crier.api('POST', '/api/games/' + gameId + '/moves', { square: square })
      .then(function (answer) {
        showMessage('');
        render(answer.game);
      })
      .catch(function (error) {
        showMessage(error.message);
        if (error.status === 409) load();
      })
      .then(function () {
        sending = false;
      });
  }

  squares.forEach(function (square, i) {
    square.addEventListener('click', function () {
      play(i);
    });
    square.addEventListener('keydown', function (evt) {
      var moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -3, ArrowDown: 3 };
      if (!(evt.key in moves)) return;
      var next = i + moves[evt.key];
      var sameRow = Math.floor(next / 3) === Math.floor(i / 3);
      if (next >= 0 && next < 9 && (Math.abs(moves[evt.key]) === 3 || sameRow)) {
        squares[next].focus();
      }
      evt.preventDefault();
    });
  });

  Crier.socket('game/' + gameId + '?subscribe-user', {
    load: load,
    receive_message: function (data) {
      var message = Crier.parse(data);
      if (!message || message.type !== 'game') return;
      if (render(message.game) && message.by !== me) {
        showMessage('');
      }
    }
  });

  Crier.socket('lobby?subscribe-user', {
    receive_message: function (data) {
      var message = Crier.parse(data);
      var inv = message && message.type === 'invitation' ? message.invitation : null;
      if (inv && inv.to === me && inv.status === 'pending') {
        Crier.toast(inv.from + ' invites you to a game.', { kind: 'info', title: 'Invitation', link: { href: '/', text: 'Open the lobby' } });
      }
    }
  });
})();
