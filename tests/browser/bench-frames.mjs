#!/usr/bin/env node
// A benchmark, not a test: how smoothly the page renders 20 answers streaming at once at
// 50 tokens/s each, in headless Chromium. It starts Sockudo, the replay server and the
// daemon (as the browser tests do), opens the page, records every animation frame while the
// answers stream, and prints one JSON line: frames, the longest frame, and the frames
// dropped (vsyncs missed, counting 60 Hz). scripts/bench runs it.
//
// Options: --answers N (20), --tokens N (250), --rate R (50).

import { launchBrowser, pageUrl, preparePage, visit, waitConnected } from './page.mjs';
import { cleanupAll, startDaemon, startReplay, startSockudo, ROOT, DAEMON_URL, handleSignals } from './system.mjs';
import path from 'node:path';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const ANSWERS = Number(args.answers ?? 20);
const TOKENS = Number(args.tokens ?? 250);
const RATE = Number(args.rate ?? 50);
const FRAME_MS = 1000 / 60;

// Runs in the page: notes the time of every animation frame once started.
function frameRecorder() {
  window.__frames = [];
  window.__recording = false;
  const tick = (t) => {
    if (window.__recording) window.__frames.push(t);
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

async function main() {
  handleSignals();
  const sockudo = await startSockudo();
  const replay = await startReplay(path.join(ROOT, 'fixtures', 'openai'), 'replay');
  await startDaemon({
    sockudoUrl: sockudo.url,
    publicUrl: sockudo.url,
    openaiUrl: replay.url,
    model: `synth:tokens=${TOKENS},rate=${RATE}`,
    webDir: path.join(ROOT, 'web', 'dist'),
  });
  const browser = await launchBrowser();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const { page } = await preparePage(context);
  await page.addInitScript(frameRecorder);
  const channel = `ai:bench-frames-${Date.now()}`;
  await visit(page, pageUrl(channel));
  await waitConnected(page);

  await page.evaluate(() => {
    window.__recording = true;
  });
  const started = Date.now();
  await Promise.all(
    Array.from({ length: ANSWERS }, (_, i) =>
      fetch(`${DAEMON_URL}/v1/prompts`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ channel, input: `frame bench ${i}` }),
      }).then((r) => {
        if (r.status !== 202) throw new Error(`prompt answered ${r.status}`);
      }),
    ),
  );
  // Wait until every answer has completed on the page.
  const deadline = Date.now() + 120_000;
  for (;;) {
    const done = await page.$$eval(
      '[data-role=answer]',
      (all) => all.filter((a) => a.getAttribute('data-status') === 'completed').length,
    );
    if (done >= ANSWERS) break;
    if (Date.now() > deadline) throw new Error(`only ${done} of ${ANSWERS} answers completed`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const streamed = (Date.now() - started) / 1000;
  const frames = await page.evaluate(() => {
    window.__recording = false;
    return window.__frames;
  });
  const gaps = frames.slice(1).map((t, i) => t - frames[i]);
  const longest = Math.max(0, ...gaps);
  const dropped = gaps.reduce((sum, gap) => sum + Math.max(0, Math.round(gap / FRAME_MS) - 1), 0);
  const sorted = [...gaps].sort((a, b) => a - b);
  const p99 = sorted.length ? sorted[Math.min(sorted.length - 1, Math.round(0.99 * (sorted.length - 1)))] : 0;
  process.stdout.write(
    `${JSON.stringify({
      event: 'frames',
      answers: ANSWERS,
      tokens: TOKENS,
      rate: RATE,
      seconds: streamed,
      frames: frames.length,
      longestMs: Number(longest.toFixed(1)),
      p99Ms: Number(p99.toFixed(1)),
      dropped,
    })}\n`,
  );
  await browser.close();
}

main()
  .then(() => cleanupAll())
  .then(() => process.exit(0))
  .catch(async (error) => {
    process.stderr.write(`bench-frames: ${error?.stack ?? error}\n`);
    await cleanupAll();
    process.exit(1);
  });
