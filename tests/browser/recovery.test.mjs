// Recovery in a real browser: a lobby whose socket was down while its invitation was accepted
// gets the acceptance after the reconnect (and opens the game) without fetching the
// invitations; a game page whose socket was down while the opponent moved gets the move after
// the reconnect without fetching or reloading anything; with the history expired it fetches the
// game state instead. Headless Chromium driven by playwright-core.
//
//   node tests/browser/recovery.test.mjs <front url>
//
// Run by tests/tests/browser.rs with a stack whose servers keep history for every facility
// and the accounts alice and bob (password CRIER_PASSWORD). Requests to the test:
//   stop-wsserver, start-wsserver   stop wsserver / start it again on the same port
//   expire-history                  delete the history streams, as CRIER_HISTORY_TTL does
//   forget-last-messages            delete the games' ws4redis last-message keys, so that a move
//                                   can only reach a reconnected page through recovery
// Exits 0 when every step passed.

import assert from 'node:assert/strict';
import { STEP_TIMEOUT, Session, ask, expectMark, launch, login, move, settings, square, waitLive } from './harness.mjs';

const { front, password, artifacts, executablePath, gameUrl } = settings('recovery.test.mjs');
const session = new Session(artifacts);
const RECONNECT_TIMEOUT = 30_000;

/** Counts a page's main-frame navigations and its GETs of the game state. */
function track(page) {
  const seen = { navigations: 0, stateLoads: 0 };
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) seen.navigations += 1;
  });
  page.on('request', (request) => {
    if (request.method() === 'GET' && /^\/api\/games\/[0-9a-f]{32}$/.test(new URL(request.url()).pathname)) {
      seen.stateLoads += 1;
    }
  });
  return seen;
}

/** Marks the page's window; a reload or navigation would lose the mark. */
async function mark(page, value) {
  await page.evaluate((value) => {
    window.__crierMark = value;
  }, value);
}

async function expectMarked(page, value) {
  assert.equal(await page.evaluate(() => window.__crierMark), value, 'the page was not reloaded');
}

async function socketsDown(pages) {
  await ask('stop-wsserver');
  for (const page of pages) await page.locator('#conn[data-state="reconnecting"]').waitFor();
}

const browser = await launch(executablePath);
let failed = false;
try {
  const contexts = { alice: await browser.newContext(), bob: await browser.newContext() };
  for (const ctx of Object.values(contexts)) ctx.setDefaultTimeout(STEP_TIMEOUT);
  const alice = session.watch('alice', await contexts.alice.newPage());
  const bob = session.watch('bob', await contexts.bob.newPage());

  await session.step("bob accepts while alice's lobby socket is down; after the reconnect her lobby opens the game without fetching anything", async () => {
    await login(alice, front, 'alice', password);
    await login(bob, front, 'bob', password);
    await waitLive(alice);
    await waitLive(bob);
    await alice.getByRole('button', { name: 'Invite bob to a game' }).click();
    await bob.getByRole('button', { name: 'Accept the invitation from alice' }).waitFor();
    let invitationLoads = 0;
    alice.on('request', (request) => {
      if (request.method() === 'GET' && new URL(request.url()).pathname === '/api/invitations') invitationLoads += 1;
    });
    await socketsDown([alice]);
    await Promise.all([bob.waitForURL(gameUrl), bob.getByRole('button', { name: 'Accept the invitation from alice' }).click()]);
    assert.equal(alice.url(), `${front}/`, 'the acceptance cannot reach alice while her socket is down');
    await ask('start-wsserver');
    await alice.waitForURL(gameUrl, { timeout: RECONNECT_TIMEOUT });
    assert.equal(alice.url(), bob.url());
    assert.equal(invitationLoads, 0, 'the acceptance came through the socket, not by fetching the invitations');
    await waitLive(alice, RECONNECT_TIMEOUT);
    await waitLive(bob, RECONNECT_TIMEOUT);
    await move(alice, bob, 4, 'X');
  });

  const aliceSeen = track(alice);
  const bobSeen = track(bob);

  await session.step("bob moves while the sockets are down; alice's page gets it after the reconnect, fetching nothing", async () => {
    await mark(alice, 'before the restart');
    await socketsDown([alice, bob]);
    await square(bob, 0).click();
    await expectMark(bob, 0, 'O');
    assert.equal(await square(alice, 0).textContent(), '', 'the move cannot reach alice while her socket is down');
    await ask('forget-last-messages');
    await ask('start-wsserver');
    await waitLive(alice, RECONNECT_TIMEOUT);
    await expectMark(alice, 0, 'O');
    await alice.getByText('Your turn: you play X.').waitFor();
    await expectMarked(alice, 'before the restart');
    assert.equal(aliceSeen.navigations, 0, 'no navigation');
    assert.equal(aliceSeen.stateLoads, 0, 'the move came through the socket, not by fetching the game');
  });

  await session.step("with the history expired, bob's page fetches the game state instead", async () => {
    await waitLive(bob, RECONNECT_TIMEOUT);
    await mark(bob, 'before the second restart');
    const loadsBefore = bobSeen.stateLoads;
    await socketsDown([alice, bob]);
    await square(alice, 2).click();
    await expectMark(alice, 2, 'X');
    await ask('expire-history');
    await ask('start-wsserver');
    await waitLive(bob, RECONNECT_TIMEOUT);
    await expectMark(bob, 2, 'X');
    assert.ok(bobSeen.stateLoads > loadsBefore, 'recovery failed, so the page fetched the game state');
    await expectMarked(bob, 'before the second restart');
    assert.equal(bobSeen.navigations, 0, 'no navigation');
  });

  await session.step('live moves continue after both reconnects', async () => {
    await waitLive(alice, RECONNECT_TIMEOUT);
    await move(bob, alice, 8, 'O');
  });

  await session.step('no script errors and no Content-Security-Policy violations', async () => {
    assert.deepEqual(session.problems, []);
  });
} catch (error) {
  failed = true;
  await session.report(error);
} finally {
  await browser.close().catch(() => {});
}
if (!failed) console.log('all recovery steps passed');
process.exit(failed ? 1 : 0);
