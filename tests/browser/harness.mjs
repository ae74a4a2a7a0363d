// What the browser scripts share: the control channel to the Rust test, Chromium, pages that
// record their console and errors, steps, and the lobby/game helpers.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

export const STEP_TIMEOUT = 15_000;

/** The front URL from argv[2] and the settings the Rust test passes in the environment. */
export function settings(script) {
  const front = (process.argv[2] || '').replace(/\/$/, '');
  if (!front) {
    console.error(`usage: node ${script} <front url>`);
    process.exit(2);
  }
  const artifacts = process.env.CRIER_ARTIFACTS || path.resolve('test-artifacts');
  fs.mkdirSync(artifacts, { recursive: true });
  return {
    front,
    password: process.env.CRIER_PASSWORD || 'correct horse battery',
    artifacts,
    executablePath: process.env.CRIER_CHROMIUM || '/usr/bin/chromium',
    gameUrl: new RegExp('^' + front.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '/game/[0-9a-f]{32}$'),
  };
}

const stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the Rust test to act on the stack (`@@crier <command>`) and waits for its `ok`. */
export async function ask(command) {
  console.log(`@@crier ${command}`);
  const { value, done } = await stdinLines.next();
  if (done || value.trim() !== 'ok') {
    throw new Error(`the test did not carry out ${command}: ${done ? 'stdin closed' : value}`);
  }
}

export function launch(executablePath) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Named pages with their console lines and uncaught errors, and the steps run so far. */
export class Session {
  constructor(artifacts) {
    this.artifacts = artifacts;
    this.pages = {};
    this.problems = [];
    this.consoleLog = [];
    this.currentStep = '(starting)';
  }

  watch(name, page) {
    this.pages[name] = page;
    page.on('console', (msg) => {
      const line = `[${name} console.${msg.type()}] ${msg.text()}`;
      this.consoleLog.push(line);
      if (/Content Security Policy/i.test(msg.text())) this.problems.push(line);
    });
    page.on('pageerror', (error) => {
      const line = `[${name} uncaught] ${error.stack || error}`;
      this.consoleLog.push(line);
      this.problems.push(line);
    });
    return page;
  }

  async step(name, fn) {
    this.currentStep = name;
    const started = Date.now();
    await fn();
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  }

  async screenshot(page, name) {
    const file = path.join(this.artifacts, name);
    await page.screenshot({ path: file, fullPage: true, animations: 'disabled' });
    console.log(`   screenshot: ${file}`);
  }

  /** Prints the failed step, screenshots of every page and the browser console. */
  async report(error) {
    console.error(`not ok - ${this.currentStep}`);
    console.error(error && error.stack ? error.stack : error);
    for (const [name, page] of Object.entries(this.pages)) {
      try {
        await this.screenshot(page, `failure-${name}.png`);
        console.error(`[${name}] at ${page.url()}`);
      } catch (e) {
        console.error(`[${name}] no screenshot: ${e.message}`);
      }
    }
    console.error('--- browser console ---');
    for (const line of this.consoleLog) console.error(line);
  }
}

export async function login(page, front, user, password) {
  await page.goto(`${front}/login`);
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await Promise.all([page.waitForURL(`${front}/`), page.getByRole('button', { name: 'Sign in' }).click()]);
  assert.equal(await page.locator('#me').textContent(), user);
}

export async function waitLive(page, timeout) {
  await page.locator('#conn[data-state="live"]').waitFor(timeout ? { timeout } : undefined);
}

export function square(page, i) {
  return page.locator(`#board button[data-square="${i}"]`);
}

export async function expectMark(page, i, mark) {
  await page.waitForFunction(
    ([i, mark]) => document.querySelector(`#board button[data-square="${i}"]`).textContent === mark,
    [i, mark],
  );
}

/** Plays square `i` as `page`'s player and checks that both players see the mark. */
export async function move(page, other, i, mark) {
  await square(page, i).click();
  await expectMark(page, i, mark);
  await expectMark(other, i, mark);
  assert.equal(await page.locator('#game-message').textContent(), '', 'an accepted move leaves no message');
}
