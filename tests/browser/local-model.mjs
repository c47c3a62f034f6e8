// Scenario 9: the offline default end to end. A second daemon with no OpenAI key or base URL
// (so it runs the built-in SmolLM2 model) on 127.0.0.1:8080, the other origin Sockudo's CORS
// allows, serving the page; a prompt typed in the page is answered by the real model
// through the daemon's ordinary OpenAI client, published to Sockudo and rendered.
//
// The model decodes greedily here (MODEL_TEMPERATURE=0), so the answer is the same on every
// run, but nothing pins its wording: it must end completed (or incomplete at the token
// limit), have text, and read on the page as it does in the channel's history.

import path from 'node:path';

import { answers, waitAnswer, waitConnected } from './page.mjs';
import { API_KEY, ARTIFACTS, PUBLISHER, Proc, ROOT, WEB_DIST, onCleanup, portAccepts, publishedAnswer } from './system.mjs';
import { Failure, check, compareTexts, waitFor } from './util.mjs';

const LOCAL_PORT = 8080;
const LOCAL_URL = `http://127.0.0.1:${LOCAL_PORT}`;
const MODEL_PATH = process.env.MODEL_PATH || path.join(ROOT, 'target', 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf');

async function startLocalDaemon(sys) {
  if (await portAccepts(LOCAL_PORT)) {
    throw new Failure(`127.0.0.1:${LOCAL_PORT} is taken; this scenario runs a second daemon there`);
  }
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/',
    NO_COLOR: '1',
    LOG: 'info',
    ABLY_API_KEY: API_KEY,
    ABLY_ENDPOINT: sys.sockudoUrl,
    PUBLIC_ABLY_ENDPOINT: `http://127.0.0.1:${sys.proxy.port}`,
    MODEL_PATH,
    MODEL_TEMPERATURE: '0',
    MODEL_MAX_OUTPUT_TOKENS: '96',
  };
  const args = ['serve', '--listen', `127.0.0.1:${LOCAL_PORT}`, '--web-dir', WEB_DIST];
  const proc = new Proc('daemon-local-model', PUBLISHER, args, {
    env,
    logFile: path.join(ARTIFACTS, 'daemon-local-model.log'),
  });
  onCleanup('daemon-local-model', () => proc.stop());
  await waitFor(
    async () => {
      if (proc.exit) throw new Failure(`the local-model daemon exited: ${proc.tail()}`);
      try {
        return (await fetch(`${LOCAL_URL}/healthz`)).status === 200;
      } catch {
        return false;
      }
    },
    { timeout: 30_000, interval: 100, what: 'the local-model daemon to answer /healthz' },
  );
  return proc;
}

export async function localModel(ctx) {
  const started = Date.now();
  const proc = await startLocalDaemon(ctx.sys);
  const loadedIn = Date.now() - started;
  try {
    const { page } = await ctx.open(`${LOCAL_URL}/?channel=${encodeURIComponent(ctx.channel)}`);
    await waitConnected(page);
    const prompt = 'What is the capital of France?';
    const form = page.locator('form[data-role=prompt-form]');
    await form.locator('textarea[name=prompt]').fill(prompt, { timeout: 5_000 });
    const asked = Date.now();
    await form.locator('button[type=submit]').click({ timeout: 5_000 });
    const firstText = await waitAnswer(page, null, (a) => a.text && a.text.length > 0, {
      timeout: 20_000,
      what: 'the first text of the model\'s answer on the page',
    });
    const firstAfter = Date.now() - asked;
    const final = await waitAnswer(page, firstText.serial, (a) => a.status !== 'streaming' && a.status !== null, {
      timeout: 40_000,
      what: 'the model\'s answer to end',
    });
    check(
      final.status === 'completed' || final.status === 'incomplete',
      `the answer ended data-status=${final.status}: ${JSON.stringify(final.text)}`,
    );
    check(final.text.trim().length > 0, 'the answer has no text');
    check(!final.text.includes('\uFFFD'), `the answer shows a broken character: ${JSON.stringify(final.text)}`);
    const published = await publishedAnswer(ctx.sys.sockudoUrl, ctx.channel, final.serial);
    const comparison = compareTexts(final.text, published.text);
    check(comparison.same, `page text and history differ: ${comparison.how}`);
    const headers = published.message?.extras?.headers ?? {};
    check(headers.source === 'local', `the answer's source header is ${JSON.stringify(headers.source)}, not "local"`);
    check(typeof headers.model === 'string' && headers.model.includes('SmolLM2'), `model header ${JSON.stringify(headers.model)}`);
    check((await answers(page)).length === 1, 'the page shows more than one answer');
    return (
      `daemon with the built-in model up in ${loadedIn} ms; first text ${firstAfter} ms after the click; ` +
      `ended ${final.status} with ${published.text.length} chars (${JSON.stringify(published.text.slice(0, 60))}), ` +
      `page ${comparison.how} to history, source=local model=${headers.model}`
    );
  } finally {
    await proc.stop();
  }
}
