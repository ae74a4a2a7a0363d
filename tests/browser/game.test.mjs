// The lobby and game in a real browser: headless Chromium (Debian's, no download) driven by
// playwright-core.
//
//   node tests/browser/game.test.mjs <front url>
//
// Run by tests/tests/browser.rs, which starts the stack (redis, wsserver with `--presence lobby`
// and heartbeats, webserver, nginx), creates the accounts and passes:
//   CRIER_PASSWORD    the password of alice, bob and admin (admin is in the group "admins")
//   CRIER_ARTIFACTS   where screenshots go (lobby.png, game.png, ...; failure-*.png on failure)
//   CRIER_CHROMIUM    the Chromium binary (default /usr/bin/chromium)
// To act on the stack the script prints `@@crier <command>` and waits for a line on stdin
// (`restart-wsserver`: stop wsserver and start it again on the same port).
//
// Exits 0 when every step passed; on failure prints the step, the pages' console and errors,
// and writes screenshots.

import assert from 'node:assert/strict';
import { STEP_TIMEOUT, Session, ask, expectMark, launch, login as signIn, move, settings, square, waitLive } from './harness.mjs';

const { front, password, artifacts, executablePath, gameUrl: GAME_URL } = settings('game.test.mjs');
const session = new Session(artifacts);
const pages = session.pages;
const watch = (name, page) => session.watch(name, page);
const step = (name, fn) => session.step(name, fn);
const screenshot = (page, name) => session.screenshot(page, name);
const login = (page, user) => signIn(page, front, user, password);

async function expectText(locator, expected) {
  await locator.filter({ hasText: expected }).first().waitFor().catch(async (e) => {
    const actual = await locator.allTextContents().catch(() => []);
    const where = Object.keys(pages).find((name) => pages[name] === locator.page()) || '?';
    throw new Error(`${where}: expected ${JSON.stringify(expected)} in ${locator}, found ${JSON.stringify(actual)}: ${e.message}`);
  });
}

async function expectRefusal(page, i, text) {
  await square(page, i).click();
  await expectText(page.locator('#game-message'), text);
}

async function toastSeen(page, text) {
  await expectText(page.locator('#toasts .toast'), text);
}

// --- the scenario ---------------------------------------------------------------------------

const browser = await launch(executablePath);

let failed = false;
try {
  const desktop = { viewport: { width: 1100, height: 720 } };
  const contexts = {
    alice: await browser.newContext(desktop),
    bob: await browser.newContext(desktop),
    admin: await browser.newContext({ viewport: { width: 390, height: 760 }, isMobile: true, hasTouch: true }),
  };
  for (const ctx of Object.values(contexts)) ctx.setDefaultTimeout(STEP_TIMEOUT);
  const alice = watch('alice', await contexts.alice.newPage());
  const bob = watch('bob', await contexts.bob.newPage());

  await step('alice and bob sign in and land in the lobby', async () => {
    await alice.goto(`${front}/login`);
    await waitLive(alice);
    await screenshot(alice, 'login.png');
    await login(alice, 'alice');
    await login(bob, 'bob');
    await waitLive(alice);
    await waitLive(bob);
  });

  await step('each sees the other online (initial list and live join)', async () => {
    await alice.locator('#players li[data-user="bob"]').waitFor();
    await bob.locator('#players li[data-user="alice"]').waitFor();
    await expectText(bob.locator('#players li[data-user="bob"]'), '(you)');
  });

  await step('a JSON POST without the CSRF token is refused with a message', async () => {
    const answer = await contexts.alice.request.post(`${front}/api/invite`, { data: { to: 'bob' } });
    assert.equal(answer.status(), 403);
    assert.match((await answer.json()).error, /CSRF/);
  });

  await step('bob may not open the admin page (403 with a message)', async () => {
    const answer = await contexts.bob.request.get(`${front}/admin`);
    assert.equal(answer.status(), 403);
    assert.match(await answer.text(), /admins group only/);
  });

  await step('alice invites bob; only bob gets the invitation', async () => {
    await alice.getByRole('button', { name: 'Invite bob to a game' }).click();
    await expectText(alice.locator('#invitations li.outgoing'), 'Waiting for an answer');
    await alice.getByRole('button', { name: 'Invited bob; waiting for an answer' }).waitFor();
    await expectText(bob.locator('#invitations li.incoming.invitation-pending'), 'alice invites you to a game.');
    await toastSeen(bob, 'alice invites you to a game of tic-tac-toe.');
    assert.equal(await alice.locator('#invitations li.incoming').count(), 0, 'the inviter gets no invitation');
  });

  await step('inviting bob twice is refused with a message', async () => {
    const csrf = await alice.locator('meta[name="csrf-token"]').getAttribute('content');
    const answer = await contexts.alice.request.post(`${front}/api/invite`, {
      data: { to: 'bob' },
      headers: { 'X-CSRF-Token': csrf },
    });
    assert.equal(answer.status(), 409);
    assert.match((await answer.json()).error, /already invited bob/);
  });

  await step('screenshot of the lobby', async () => {
    await screenshot(bob, 'lobby.png');
    await screenshot(alice, 'lobby-inviter.png');
  });

  let gameUrl;
  await step('bob accepts; both are taken to the same new game', async () => {
    await Promise.all([
      alice.waitForURL(GAME_URL),
      bob.waitForURL(GAME_URL),
      bob.getByRole('button', { name: 'Accept the invitation from alice' }).click(),
    ]);
    gameUrl = alice.url();
    assert.equal(bob.url(), gameUrl);
    await waitLive(alice);
    await waitLive(bob);
    await expectText(alice.locator('#turn'), 'Your turn: you play X.');
    await expectText(bob.locator('#turn'), 'Waiting for alice (X) to move.');
  });

  await step('a move out of turn is refused with a message', async () => {
    await expectRefusal(bob, 0, "It is alice's turn, not yours");
    await expectMark(alice, 0, '');
  });

  await step('alice plays the centre; bob sees it', async () => {
    await move(alice, bob, 4, 'X');
    await expectText(bob.locator('#turn'), 'Your turn: you play O.');
  });

  await step('a move on a taken square is refused with a message', async () => {
    await expectRefusal(bob, 4, 'The square in row 2, column 2 is already taken');
  });

  await step('bob plays with the keyboard (arrow keys, Enter); alice sees it', async () => {
    await square(bob, 4).focus();
    await bob.keyboard.press('ArrowUp');
    await bob.keyboard.press('ArrowLeft');
    assert.equal(await bob.evaluate(() => document.activeElement.dataset.square), '0');
    await bob.keyboard.press('Enter');
    await expectMark(bob, 0, 'O');
    await expectMark(alice, 0, 'O');
  });

  // This stack keeps no history, so a reconnecting page cannot recover and fetches the game
  // state again (recovery_failed). Moves right after the restart may also reach a page that
  // way; the admin notice below has no such path, so it shows that the sockets themselves
  // receive again.
  await step('the pages survive a wsserver restart, fetch the game again (no history) and keep receiving', async () => {
    // Listening before the restart: the pages may reconnect as soon as wsserver is back.
    const gameState = (r) => r.method() === 'GET' && /^\/api\/games\/[0-9a-f]{32}$/.test(new URL(r.url()).pathname);
    const refetched = [alice, bob].map((page) => page.waitForRequest(gameState, { timeout: 45_000 }).then(() => 'fetched', (e) => e));
    for (const page of [alice, bob]) {
      await page.evaluate(() => {
        window.__connStates = [];
        const el = document.getElementById('conn');
        new MutationObserver(() => window.__connStates.push(el.dataset.state)).observe(el, { attributes: true });
      });
    }
    await ask('restart-wsserver');
    for (const page of [alice, bob]) {
      await page.waitForFunction(() => window.__connStates.includes('reconnecting'));
      await page.waitForFunction(() => document.getElementById('conn').dataset.state === 'live', null, { timeout: 30_000 });
    }
    assert.deepEqual(await Promise.all(refetched), ['fetched', 'fetched'], 'both pages fetched the game state after reconnecting');
    await move(alice, bob, 2, 'X');
    await move(bob, alice, 1, 'O');
  });

  await step('a reload restores the board from the server', async () => {
    await bob.reload();
    await waitLive(bob);
    for (const [i, mark] of [[0, 'O'], [1, 'O'], [2, 'X'], [4, 'X'], [3, '']]) await expectMark(bob, i, mark);
    await expectText(bob.locator('#turn'), 'Waiting for alice (X) to move.');
  });

  await step('alice completes the diagonal and wins; both see the end', async () => {
    await move(alice, bob, 6, 'X');
    await expectText(alice.locator('#turn'), 'You won!');
    await expectText(bob.locator('#turn'), 'alice won.');
    for (const page of [alice, bob]) {
      assert.equal(await page.locator('#board button.win').count(), 3, 'the winning line is marked');
    }
  });

  await step('a move after the end is refused with a message', async () => {
    await expectRefusal(bob, 8, 'The game is over: alice won');
    await expectMark(alice, 8, '');
  });

  await step('an admin notice reaches both players as a toast', async () => {
    const admin = watch('admin', await contexts.admin.newPage());
    await login(admin, 'admin');
    await admin.goto(`${front}/admin`);
    await admin.getByLabel('Notice').fill('Server maintenance at 18:00. Finish your games!');
    await Promise.all([admin.waitForURL(`${front}/admin?sent=1`), admin.getByRole('button', { name: 'Send to everyone' }).click()]);
    await expectText(admin.locator('.success'), 'Notice sent');
    await toastSeen(alice, 'Server maintenance at 18:00.');
    await toastSeen(bob, 'Server maintenance at 18:00.');
    await screenshot(admin, 'admin-mobile.png');
  });

  await step('screenshots of the game', async () => {
    await screenshot(alice, 'game.png');
    await bob.setViewportSize({ width: 390, height: 760 });
    await screenshot(bob, 'game-mobile.png');
  });

  await step('no script errors and no Content-Security-Policy violations', async () => {
    assert.deepEqual(session.problems, []);
  });
} catch (error) {
  failed = true;
  await session.report(error);
} finally {
  await browser.close().catch(() => {});
}
if (!failed) {
  console.log('all browser steps passed');
}
process.exit(failed ? 1 : 0);
