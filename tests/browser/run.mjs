#!/usr/bin/env node
// Real-browser end-to-end tests of the page (scripts/browser-test runs this).
//
//   node tests/browser/run.mjs                 every scenario
//   node tests/browser/run.mjs --only 1,6      scenarios by number or name
//   node tests/browser/run.mjs --infra         only 0-system: the test system itself, no page
//
// Starts a local Sockudo, the cut-able proxy in front of it, two replay servers
// (fixtures/openai and tests/browser/fixtures) and the daemon on 127.0.0.1:8787, then runs
// each scenario in a fresh context of headless /usr/bin/chromium. Prints `ok` or `FAILED`
// per scenario, then `N passed, M failed`; exits 1 on any failure. Screenshots and logs go
// to target/browser-artifacts/.

import fs from 'node:fs';
import path from 'node:path';

import { CHROMIUM, launchBrowser, notes, preparePage, visit } from './page.mjs';
import { SCENARIOS } from './scenarios.mjs';
import {
  ARTIFACTS,
  BROWSER_FIXTURES,
  PUBLISHER,
  ROOT,
  WEB_DIST,
  cleanupAll,
  finish,
  handleSignals,
  interrupted,
  onCleanup,
  startDaemon,
  startProxy,
  startReplay,
  startSockudo,
} from './system.mjs';
import { Failure, channelFor, secondsSince, withTimeout } from './util.mjs';

/** The daemon's model: long enough (8 s) to be stopped mid-stream. */
const DAEMON_MODEL = 'synth:tokens=240,rate=30';

function parseArgs(argv) {
  const options = { infra: false, only: null };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--infra') options.infra = true;
    else if (arg === '--only') options.only = (argv[++i] ?? '').split(',').filter(Boolean);
    else if (arg.startsWith('--only=')) options.only = arg.slice(7).split(',').filter(Boolean);
    else if (arg === '-h' || arg === '--help') {
      console.log('usage: node tests/browser/run.mjs [--infra] [--only N,NAME,...]');
      process.exit(0);
    } else {
      console.error(`unknown argument: ${arg}`);
      process.exit(2);
    }
  }
  return options;
}

function chosenScenarios(options) {
  if (options.infra) return SCENARIOS.filter((s) => s.n === 0);
  if (!options.only) return SCENARIOS;
  const chosen = SCENARIOS.filter((s) =>
    options.only.some((want) => want === String(s.n) || want === s.name || s.name.includes(want)),
  );
  if (chosen.length === 0) {
    console.error(`--only ${options.only.join(',')} names no scenario`);
    process.exit(2);
  }
  return chosen;
}

function requireFile(file, hint) {
  if (!fs.existsSync(file)) throw new Failure(`${path.relative(ROOT, file) || file} is missing: ${hint}`);
}

/** Starts everything; resolves to what the scenarios need. */
async function startSystem(options) {
  requireFile(CHROMIUM, 'install Debian chromium (apt-get install chromium chromium-driver)');
  requireFile(PUBLISHER, 'build it with cargo build --release -p publisher');
  const pageBuilt = fs.existsSync(path.join(WEB_DIST, 'index.html'));
  if (!options.infra && !pageBuilt) {
    throw new Failure('web/dist/index.html is missing: build the page with trunk build --release');
  }
  const sockudo = await startSockudo();
  const proxy = await startProxy(sockudo.port);
  const replay = await startReplay(path.join(ROOT, 'fixtures', 'openai'), 'replay');
  const xssReplay = await startReplay(BROWSER_FIXTURES, 'replay-browser-fixtures');
  await startDaemon({
    sockudoUrl: sockudo.url,
    publicUrl: `http://127.0.0.1:${proxy.port}`,
    openaiUrl: replay.url,
    model: DAEMON_MODEL,
    webDir: pageBuilt ? WEB_DIST : null,
  });
  const browser = await launchBrowser();
  onCleanup('browser', () => browser.close());
  return {
    browser,
    sys: { sockudoUrl: sockudo.url, proxy, replayUrl: replay.url, xssReplayUrl: xssReplay.url },
    describe:
      `Sockudo ${sockudo.url}, proxy :${proxy.port}, replay ${replay.url}, ` +
      `fixtures replay ${xssReplay.url}, daemon http://127.0.0.1:8787 (${DAEMON_MODEL}), ` +
      `Chromium ${browser.version()}`,
  };
}

/** Runs one scenario in its own browser context; resolves to a result to print. */
async function runScenario(scenario, { browser, sys }) {
  const started = Date.now();
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const pages = [];
  const ctx = {
    sys,
    context,
    channel: channelFor(scenario.n),
    async open(url) {
      const opened = await preparePage(context);
      pages.push(opened);
      await visit(opened.page, url);
      return opened;
    },
    /** An extra screenshot of the latest page: <scenario>.<label>.png. */
    async shot(label) {
      const last = pages.at(-1);
      if (!last) return;
      const file = path.join(ARTIFACTS, `${scenario.name}.${label}.png`);
      await last.page.screenshot({ path: file, fullPage: true, timeout: 5_000 }).catch(() => {});
    },
  };
  let summary = null;
  let error = null;
  const running = scenario.run(ctx);
  running.catch(() => {}); // it may still fail after a timeout, once the context is closed
  try {
    summary = await withTimeout(running, scenario.timeout, scenario.name);
  } catch (caught) {
    error = caught;
  }

  const last = pages.at(-1);
  let screenshot = null;
  if (last) {
    screenshot = path.join(ARTIFACTS, `${scenario.name}.png`);
    await last.page.screenshot({ path: screenshot, fullPage: true, timeout: 5_000 }).catch((e) => {
      screenshot = `(no screenshot: ${e.message.split('\n')[0]})`;
    });
  }
  // What the recorder noted on each page, for looking into a failure afterwards.
  const recorded = [];
  for (const { page } of pages) recorded.push(await withTimeout(notes(page), 3_000, 'notes').catch((e) => String(e)));
  if (recorded.length > 0) {
    fs.writeFileSync(path.join(ARTIFACTS, `${scenario.name}.notes.json`), JSON.stringify(recorded, null, 1));
  }
  const seen = pages.map((p) => p.seen);
  await withTimeout(Promise.all(seen.flatMap((s) => s.bodyReads)), 5_000, 'reading response bodies').catch(() => {});
  // Checked in every scenario: nothing carries the key, no dialog ever opens.
  const leaks = [...new Set(seen.flatMap((s) => s.leaks))];
  const dialogs = seen.flatMap((s) => s.dialogs);
  if (!error && leaks.length > 0) error = new Failure(`the key secret reached the page: ${leaks.join('; ')}`);
  if (!error && dialogs.length > 0) error = new Failure(`dialogs opened: ${dialogs.join('; ')}`);
  await context.close().catch(() => {});
  return {
    name: scenario.name,
    seconds: secondsSince(started),
    ok: !error,
    summary,
    reason: error ? (error instanceof Failure ? error.message : (error.stack ?? String(error))) : null,
    consoleErrors: seen.flatMap((s) => s.consoleErrors),
    pageErrors: seen.flatMap((s) => s.pageErrors),
    screenshot,
  };
}

function indent(text) {
  return String(text).split('\n').join('\n          ');
}

function print(result) {
  const head = `${result.ok ? 'ok    ' : 'FAILED'}  ${result.name} (${result.seconds} s)`;
  console.log(`${head}: ${result.ok ? result.summary : indent(result.reason)}`);
  const limit = 8;
  for (const [label, list] of [['console error', result.consoleErrors], ['page error', result.pageErrors]]) {
    for (const line of list.slice(0, limit)) console.log(`          ${label}: ${indent(line)}`);
    if (list.length > limit) console.log(`          … ${list.length - limit} more ${label}s`);
  }
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const scenarios = chosenScenarios(options);
  handleSignals();
  fs.rmSync(ARTIFACTS, { recursive: true, force: true });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const started = Date.now();

  let system;
  try {
    system = await startSystem(options);
  } catch (error) {
    console.log(`FAILED  start-up: ${indent(error instanceof Failure ? error.message : error.stack)}`);
    console.log(`0 passed, ${scenarios.length} failed (nothing ran)`);
    return 1;
  }
  console.log(`system up in ${secondsSince(started)} s: ${system.describe}`);

  const results = [];
  for (const scenario of scenarios) {
    if (interrupted()) break;
    const result = await runScenario(scenario, system);
    if (interrupted()) break;
    print(result);
    results.push(result);
  }
  if (interrupted()) return 1;
  await cleanupAll();
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(`artifacts (screenshots, logs): ${path.relative(process.cwd(), ARTIFACTS) || ARTIFACTS}`);
  console.log(`${passed} passed, ${failed} failed (${secondsSince(started)} s)`);
  return failed > 0 ? 1 : 0;
}

main().then(finish, (error) => {
  console.error(error.stack ?? String(error));
  return finish(1);
});
