// The browser side: headless Debian Chromium through playwright-core, a recorder injected
// into every page (it notes each state the answers and the connection indicator pass
// through, so short-lived states are not missed between polls), and a monitor of what the
// page receives (console errors, page errors, dialogs, and anything carrying the key).

import { chromium } from 'playwright-core';

import { DAEMON_URL, KEY_SECRET } from './system.mjs';
import { Failure, waitFor } from './util.mjs';

export const CHROMIUM = '/usr/bin/chromium';

/** Launches headless Chromium with the flags this machine's probe settled on. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
    // run.mjs handles signals itself and closes the browser in its clean-up.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    timeout: 30_000,
  });
}

/**
 * Runs in the page before its own scripts. Every DOM change rescans the answers and the
 * connection indicator and appends to `window.__browserTest` whatever differs from the
 * last note: per answer serial, { t, status, partial, text, stop }; for the connection,
 * { t, state }. `t` is milliseconds since navigation.
 */
function recorder() {
  const notes = { answers: {}, connection: [] };
  window.__browserTest = notes;
  const now = () => Math.round(performance.now());
  const scan = () => {
    for (const answer of document.querySelectorAll('[data-role=answer]')) {
      const serial = answer.getAttribute('data-serial') ?? '(no serial)';
      const text = answer.querySelector('[data-role=text]');
      const note = {
        t: now(),
        status: answer.getAttribute('data-status'),
        partial: answer.getAttribute('data-partial'),
        text: text ? text.textContent : null,
        stop: answer.querySelector('button[data-role=stop]') !== null,
      };
      const list = (notes.answers[serial] ??= []);
      const last = list[list.length - 1];
      if (
        !last ||
        last.status !== note.status ||
        last.partial !== note.partial ||
        last.text !== note.text ||
        last.stop !== note.stop
      ) {
        list.push(note);
      }
    }
    const indicator = document.querySelector('[data-connection-state]');
    if (indicator) {
      const state = indicator.getAttribute('data-connection-state');
      const last = notes.connection[notes.connection.length - 1];
      if (!last || last.state !== state) notes.connection.push({ t: now(), state });
    }
  };
  new MutationObserver(scan).observe(document, {
    subtree: true,
    childList: true,
    attributes: true,
    characterData: true,
  });
}

/** The secret's places in a request or a received text, as leak descriptions. */
function leaksIn(where, text) {
  return typeof text === 'string' && text.includes(KEY_SECRET) ? [`${where} contains the key secret`] : [];
}

/**
 * Watches `page`: console errors, page errors, dialogs (dismissed), every request and
 * response (bodies are read and searched for the key secret), WebSocket URLs and frames.
 */
export function monitor(page) {
  const seen = {
    consoleErrors: [],
    pageErrors: [],
    dialogs: [],
    requests: [],
    responses: [],
    websockets: [],
    leaks: [],
    bodyReads: [],
  };
  page.on('console', (message) => {
    if (message.type() === 'error') {
      const where = message.location()?.url ? ` (${message.location().url})` : '';
      seen.consoleErrors.push(`${message.text()}${where}`);
    }
  });
  page.on('pageerror', (error) => seen.pageErrors.push(String(error?.stack ?? error)));
  page.on('dialog', (dialog) => {
    seen.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  page.on('request', (request) => {
    const url = request.url();
    seen.requests.push(`${request.method()} ${url}`);
    seen.leaks.push(...leaksIn(`request URL ${url}`, url));
    const headers = request.headers();
    for (const [name, value] of Object.entries(headers)) {
      seen.leaks.push(...leaksIn(`request header ${name} of ${url}`, value));
    }
    if (/^basic\s/i.test(headers.authorization ?? '')) {
      seen.leaks.push(`request ${url} carries Basic (key) authentication`);
    }
    seen.leaks.push(...leaksIn(`request body of ${url}`, request.postData() ?? ''));
  });
  page.on('response', (response) => {
    const url = response.url();
    const entry = { url, status: response.status(), bytes: null };
    seen.responses.push(entry);
    for (const [name, value] of Object.entries(response.headers())) {
      seen.leaks.push(...leaksIn(`response header ${name} of ${url}`, value));
    }
    // Redirects and upgrades have no body; body() rejects for them.
    const read = response
      .body()
      .then((body) => {
        entry.bytes = body.length;
        seen.leaks.push(...leaksIn(`response body of ${url}`, body.toString('utf8')));
      })
      .catch(() => {});
    seen.bodyReads.push(read);
  });
  page.on('websocket', (socket) => {
    const record = { url: socket.url(), received: 0, sent: 0, closed: false };
    seen.websockets.push(record);
    seen.leaks.push(...leaksIn(`WebSocket URL ${socket.url()}`, socket.url()));
    socket.on('framereceived', (frame) => {
      record.received += 1;
      seen.leaks.push(...leaksIn(`a WebSocket frame received on ${socket.url()}`, String(frame.payload)));
    });
    socket.on('framesent', (frame) => {
      record.sent += 1;
      seen.leaks.push(...leaksIn(`a WebSocket frame sent on ${socket.url()}`, String(frame.payload)));
    });
    socket.on('close', () => (record.closed = true));
  });
  return seen;
}

/** The page URL showing `channel`. */
export function pageUrl(channel) {
  return `${DAEMON_URL}/?channel=${encodeURIComponent(channel)}`;
}

/** A new page in `context` with the recorder and a monitor; returns { page, seen }. */
export async function preparePage(context) {
  const page = await context.newPage();
  await page.addInitScript(recorder);
  return { page, seen: monitor(page) };
}

/** Loads `url` in `page`; fails unless it answers 200. */
export async function visit(page, url) {
  const response = await page.goto(url, { waitUntil: 'load', timeout: 15_000 });
  if (!response || response.status() !== 200) {
    throw new Failure(`GET ${url} answered ${response ? response.status() : 'nothing'}`);
  }
}

/** The answers on the page, in document order: { serial, status, partial, text, stop }. */
export function answers(page) {
  return page.$$eval('[data-role=answer]', (elements) =>
    elements.map((element) => ({
      serial: element.getAttribute('data-serial'),
      status: element.getAttribute('data-status'),
      partial: element.getAttribute('data-partial'),
      stalled: element.getAttribute('data-stalled'),
      badge: element.querySelector('.badge')?.textContent ?? null,
      text: element.querySelector('[data-role=text]')?.textContent ?? null,
      stop: element.querySelector('button[data-role=stop]') !== null,
    })),
  );
}

/** What the recorder noted so far. */
export function notes(page) {
  return page.evaluate(() => window.__browserTest ?? { answers: {}, connection: [] });
}

/** The connection indicator's current state, or null without one. */
export function connectionState(page) {
  return page
    .locator('[data-connection-state]')
    .first()
    .getAttribute('data-connection-state', { timeout: 1_000 })
    .catch(() => null);
}

/** Waits until the page's connection indicator says `connected`. */
export function waitConnected(page, timeout = 15_000) {
  return waitFor(async () => (await connectionState(page)) === 'connected', {
    timeout,
    interval: 50,
    what: 'the connection indicator to say connected',
    seen: async () => `data-connection-state=${await connectionState(page)}`,
  });
}

/** Short description of the answers on the page, for failure messages. */
export async function describeAnswers(page) {
  const list = await answers(page);
  if (list.length === 0) return 'no [data-role=answer] on the page';
  return list
    .map((a) => `serial ${a.serial}: status=${a.status} partial=${a.partial} ${a.text?.length ?? 'no'} chars`)
    .join('; ');
}

/** Waits for the answer `serial` (or the only answer, when null) to satisfy `test`. */
export async function waitAnswer(page, serial, test, { timeout = 20_000, what }) {
  return waitFor(
    async () => {
      const list = await answers(page);
      const answer = serial ? list.find((a) => a.serial === serial) : list.length === 1 ? list[0] : null;
      return answer && test(answer) ? answer : null;
    },
    { timeout, interval: 40, what, seen: () => describeAnswers(page) },
  );
}
