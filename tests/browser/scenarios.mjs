// The scenarios. Each gets a fresh browser context and its own channel, throws a
// `Failure` with the reason when something is wrong, and returns a one-line summary.
//
// What is compared: the `textContent` of the answer's `[data-role=text]` against the `data`
// of the answer's message in the channel's REST history (and that against what `publisher
// ask` printed). The page renders Markdown, so the answers compared are synthesized ones
// (`synth:` models: words, commas and full stops, multi-byte characters, one paragraph),
// which contain no Markdown syntax; they must be equal exactly, or at least after
// `util.normalise` (whitespace runs collapsed, ends trimmed), and the summary says which.
// Texts noted while streaming must each be a prefix of the final one.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import { localModel } from './local-model.mjs';
import { answers, notes, pageUrl, waitAnswer, waitConnected, connectionState } from './page.mjs';
import {
  API_KEY,
  ARTIFACTS,
  DAEMON_URL,
  KEY_SECRET,
  Proc,
  ROOT,
  askCompleted,
  history,
  onCleanup,
  publishedAnswer,
  startAsk,
} from './system.mjs';
import { Failure, check, compareTexts, isPrefix, normalise, sleep, waitFor } from './util.mjs';

/** The text the XSS recording (fixtures/xss.jsonl) streams, and the payloads in it. */
const XSS_LITERALS = ['<img src=x onerror=alert(1)>', '<script>alert(1)</script>'];
const XSS_LINK = '[link](javascript:alert(1))';

// ---------------------------------------------------------------------------------------
// Helpers

function ask(ctx, channel, model, prompt, openaiUrl = ctx.sys.replayUrl) {
  return startAsk({ sockudoUrl: ctx.sys.sockudoUrl, openaiUrl, channel, model, prompt });
}

/** Starts `ask` and waits until it has streamed `chars` characters and is still going. */
async function askStreaming(ctx, model, prompt, chars, why) {
  const run = ask(ctx, ctx.channel, model, prompt);
  await waitFor(() => run.text().length >= chars || run.proc.exit, {
    timeout: 15_000,
    what: `ask to have streamed ${chars} characters`,
  });
  check(!run.proc.exit, `the answer ended before ${why}`);
  return run;
}

/** Fails unless the page's final text equals history's; returns how they compared. */
function sameText(shown, published) {
  const comparison = compareTexts(shown ?? '', published ?? '');
  check(comparison.same, `page text and history differ: ${comparison.how}`);
  return comparison.how;
}

/** Fails unless every text the recorder noted for `serial` is a prefix of `final`. */
function textsOnlyGrew(recorded, final) {
  const list = recorded ?? [];
  for (const note of list) {
    if (note.text !== null && !isPrefix(note.text, final)) {
      throw new Failure(
        `at t=${note.t} ms (status ${note.status}) the page showed text that is not a prefix of ` +
          `the final text: ${JSON.stringify(normalise(note.text).slice(-60))}`,
      );
    }
  }
}

/** Waits for the page to show the answer `serial` with a terminal status. */
function waitTerminal(page, serial, timeout = 25_000) {
  return waitAnswer(page, serial, (a) => a.status !== 'streaming' && a.status !== null, {
    timeout,
    what: `answer ${serial} to reach a terminal data-status`,
  });
}

/** The connection states the recorder noted from `from` on, as `state@ms → …`. */
function describeStates(list, from = 0) {
  return list
    .filter((n) => n.t >= from)
    .map((n) => `${n.state}@${n.t}`)
    .join(' → ');
}

// ---------------------------------------------------------------------------------------
// 0: the test system itself

async function system(ctx) {
  const { sys } = ctx;
  const facts = [];

  const health = await fetch(`${DAEMON_URL}/healthz`);
  check(health.status === 200, `/healthz answered ${health.status}`);

  const config = await (await fetch(`${DAEMON_URL}/v1/config`)).json();
  const proxyUrl = `http://127.0.0.1:${sys.proxy.port}`;
  check(
    config.ablyEndpoint === proxyUrl,
    `/v1/config hands pages ablyEndpoint ${JSON.stringify(config.ablyEndpoint)}, not the proxy ${proxyUrl}`,
  );
  check(typeof config.authUrl === 'string', `/v1/config has no authUrl: ${JSON.stringify(config)}`);
  facts.push('/v1/config points at the proxy');

  const channel = ctx.channel;
  const tokenResponse = await fetch(`${DAEMON_URL}/v1/token?channel=${encodeURIComponent(channel)}`);
  const tokenBody = await tokenResponse.text();
  check(tokenResponse.status === 200, `/v1/token answered ${tokenResponse.status}: ${tokenBody}`);
  check(!tokenBody.includes(KEY_SECRET), '/v1/token body contains the key secret');
  const tokenRequest = JSON.parse(tokenBody);
  check(tokenRequest.keyName === 'app-key' && tokenRequest.mac, `/v1/token is no signed TokenRequest: ${tokenBody}`);
  facts.push('/v1/token is a signed request without the secret');

  await proxySelfTest(sys.proxy);
  facts.push('proxy relays, cuts and refuses');

  // From a page on the daemon's origin: the token exchange through the proxy (CORS).
  const { page } = await ctx.open(`${DAEMON_URL}/healthz`);
  const exchange = await page.evaluate(async (channel) => {
    const config = await (await fetch('/v1/config')).json();
    const request = await (await fetch(`${config.authUrl}?channel=${encodeURIComponent(channel)}`)).json();
    const response = await fetch(`${config.ablyEndpoint}/keys/${encodeURIComponent(request.keyName)}/requestToken`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(request),
    });
    const details = await response.json();
    return { status: response.status, hasToken: typeof details.token === 'string', capability: details.capability };
  }, channel);
  check(exchange.status === 200 && exchange.hasToken, `token exchange from the page failed: ${JSON.stringify(exchange)}`);
  const capability = JSON.parse(exchange.capability ?? '{}');
  const operations = JSON.stringify(Object.values(capability).flat().sort());
  check(
    Object.keys(capability).length === 1 && capability[channel] && operations === '["history","subscribe"]',
    `the browser's token should allow history and subscribe on ${channel} only, it allows ${exchange.capability}`,
  );
  facts.push(`the browser exchanged a token through the proxy (capability ${exchange.capability})`);
  return facts.join('; ');
}

/** Exercises the proxy on raw sockets: a request through it, a cut, a refusal. */
async function proxySelfTest(proxy) {
  const request = (path) =>
    new Promise((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port: proxy.port });
      let reply = '';
      socket.on('data', (d) => (reply += d));
      socket.on('error', (error) => resolve({ reply, error: error.code ?? error.message }));
      socket.on('close', () => resolve({ reply, error: null }));
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    });
  const first = await request('/time');
  check(first.reply.startsWith('HTTP/1.1 200'), `GET /time through the proxy: ${JSON.stringify(first)}`);

  // A connection left open (an unfinished request) is reset by a cut.
  const held = net.connect({ host: '127.0.0.1', port: proxy.port });
  const heldEnd = new Promise((resolve) => {
    held.on('error', (error) => resolve(error.code ?? error.message));
    held.on('close', () => resolve('closed'));
  });
  await new Promise((resolve) => held.once('connect', resolve));
  held.write('GET /time HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  await waitFor(() => proxy.open > 0, { timeout: 2_000, what: 'the proxy to relay the held connection' });
  const cut = proxy.cut();
  check(cut >= 1, 'the proxy cut no connection');
  const how = await Promise.race([heldEnd, sleep(2_000).then(() => 'still open')]);
  check(how === 'ECONNRESET', `a cut connection should be reset, it ended: ${how}`);

  proxy.refuseFor(400);
  const refused = await request('/time');
  check(refused.reply === '' && refused.error, `a refused connection got ${JSON.stringify(refused)}`);
  await sleep(450);
  const again = await request('/time');
  check(again.reply.startsWith('HTTP/1.1 200'), `after the refusal, GET /time: ${JSON.stringify(again)}`);
}

// ---------------------------------------------------------------------------------------
// 1: a page open before the answer starts

async function liveFromStart(ctx) {
  const { page } = await ctx.open(pageUrl(ctx.channel));
  await waitConnected(page);
  await sleep(300); // let the channel attach
  const run = ask(ctx, ctx.channel, 'synth:tokens=120,rate=30', 'browser test: live from the start');

  const first = await waitAnswer(page, null, (a) => a.text && a.text.length > 0, {
    what: 'an answer with text',
  });
  const serial = first.serial;
  // Sample the text while it streams.
  const samples = [];
  for (;;) {
    const answer = (await answers(page)).find((a) => a.serial === serial);
    if (!answer || answer.status !== 'streaming') break;
    samples.push(answer.text?.length ?? 0);
    if (samples.length === 15) await ctx.shot('streaming');
    if (samples.length > 400) break;
    await sleep(100);
  }
  const final = await waitTerminal(page, serial);
  const outcome = await askCompleted(run);
  check(outcome.serial === serial, `the page shows serial ${serial}, ask published ${outcome.serial}`);
  const published = await publishedAnswer(ctx.sys.sockudoUrl, ctx.channel, serial);

  const distinct = [...new Set(samples)];
  check(
    distinct.length >= 5,
    `expected the text to grow over several samples while streaming, saw lengths ${JSON.stringify(distinct)}`,
  );
  for (let i = 1; i < samples.length; i += 1) {
    check(samples[i] >= samples[i - 1], `the text shrank while streaming: ${samples[i - 1]} → ${samples[i]} chars`);
  }
  check(final.status === 'completed', `the answer ended data-status=${final.status}`);
  check(published.status === 'completed', `history says ${published.status}`);
  check(published.text === outcome.text, 'history text differs from what ask streamed');
  const how = sameText(final.text, published.text);
  check(final.partial !== 'true', 'the completed answer still says data-partial=true');
  check(!final.stop, 'the completed answer still has a Stop button');
  const recorded = (await notes(page)).answers[serial];
  textsOnlyGrew(recorded, published.text);
  check(
    recorded.some((n) => n.status === 'streaming' && n.stop),
    'no Stop button was seen while the answer streamed',
  );
  return (
    `${samples.length} samples while streaming, ${distinct.length} distinct lengths ` +
    `(${distinct[0]} → ${distinct[distinct.length - 1]} chars), ${recorded.length} DOM states; ` +
    `completed, text ${how} to history (${published.text.length} chars)`
  );
}

// ---------------------------------------------------------------------------------------
// 2: a page opened mid-stream

async function joinMidStream(ctx) {
  const run = await askStreaming(
    ctx, 'synth:tokens=180,rate=30', 'browser test: join mid-stream', 150, 'the page could join',
  );
  const streamedBefore = run.text().length;
  const { page } = await ctx.open(pageUrl(ctx.channel));
  const first = await waitAnswer(page, null, (a) => a.text !== null, { what: 'the answer to appear' });
  const serial = first.serial;
  const final = await waitTerminal(page, serial);
  const outcome = await askCompleted(run);
  const published = await publishedAnswer(ctx.sys.sockudoUrl, ctx.channel, serial);

  const recorded = (await notes(page)).answers[serial];
  const appeared = recorded[0].t;
  const firstText = recorded.find((n) => normalise(n.text).length > 0);
  check(firstText, 'the page never showed text for the answer');
  check(
    firstText.status === 'streaming',
    `the page joined mid-stream but first showed text with data-status=${firstText.status}`,
  );
  // Sockudo's rewind replays message.create and then one update per version (real Ably
  // sends one aggregate), so the first second after joining may pass through several
  // states; by its end the page must show at least what had been streamed before it opened
  // (less 40 chars: the publisher coalesces appends for 40 ms).
  const early = recorded.filter((n) => n.t <= appeared + 1_000);
  const shownEarly = Math.max(...early.map((n) => normalise(n.text).length));
  const finalLength = normalise(published.text).length;
  check(
    shownEarly >= streamedBefore - 40,
    `within 1 s of joining the page showed ${shownEarly} chars, though ${streamedBefore} had been streamed before it opened`,
  );
  check(shownEarly < finalLength, 'the first second after joining already showed the whole answer');
  const liveTexts = new Set(
    recorded.filter((n) => n.t > appeared + 1_000 && n.status === 'streaming').map((n) => n.text),
  );
  check(liveTexts.size >= 2, 'after joining, the text did not grow live while streaming');
  textsOnlyGrew(recorded, published.text);
  check(final.status === 'completed', `the answer ended data-status=${final.status}`);
  check(outcome.serial === serial, `the page shows serial ${serial}, ask published ${outcome.serial}`);
  const how = sameText(final.text, published.text);
  return (
    `joined after ${streamedBefore} chars were streamed; within 1 s showed ${shownEarly} chars ` +
    `(first text data-partial=${firstText.partial}), then ${liveTexts.size} live states; ` +
    `completed, text ${how} to history (${published.text.length} chars)`
  );
}

// ---------------------------------------------------------------------------------------
// 3: a page opened after completion

async function afterCompletion(ctx) {
  const outcome = await askCompleted(
    ask(ctx, ctx.channel, 'synth:tokens=80,rate=0', 'browser test: after completion'),
  );
  const published = await publishedAnswer(ctx.sys.sockudoUrl, ctx.channel, outcome.serial);
  const { page } = await ctx.open(pageUrl(ctx.channel));
  const final = await waitAnswer(page, outcome.serial, (a) => a.status !== 'streaming' || a.text, {
    what: `answer ${outcome.serial} to appear`,
  });
  await sleep(300); // anything that would change it again
  const recorded = (await notes(page)).answers[outcome.serial];
  const appeared = recorded[0].t;
  const firstText = recorded.find((n) => normalise(n.text).length > 0);
  check(firstText, 'the finished answer never showed text');
  // Sockudo's rewind replays every version of the message (the empty create, then each
  // append as the text so far, then the final update), where Ably sends one aggregate; a
  // page may pass through those versions for a moment, not longer.
  const firstCompleted = recorded.find((n) => n.status === 'completed');
  check(firstCompleted, 'the finished answer never showed data-status=completed');
  check(
    compareTexts(firstCompleted.text, published.text).same,
    `it was not whole once completed: ${normalise(firstCompleted.text).length} of ${published.text.length} chars`,
  );
  const completedAt = firstCompleted.t;
  check(
    completedAt - appeared <= 250,
    `it took ${completedAt - appeared} ms from appearing to data-status=completed`,
  );
  // By position, not time: notes taken in the same millisecond keep their order.
  const completedIndex = recorded.indexOf(firstCompleted);
  const after = [...new Set(recorded.slice(completedIndex).map((n) => n.status))];
  check(after.length === 1, `after completing it went through ${after.join(', ')}`);
  const before = recorded.slice(0, completedIndex);
  const transient = before.length
    ? `; before that, ${before.length} ${[...new Set(before.map((n) => n.status))].join('/')} state(s) for ${completedAt - appeared} ms (Sockudo's replayed versions)`
    : '';
  check(final.partial !== 'true', 'the answer from rewind says data-partial=true');
  check(!final.stop, 'the completed answer has a Stop button');
  const now = (await answers(page)).find((a) => a.serial === outcome.serial);
  const how = sameText(now.text, published.text);

  // Loading earlier history must not duplicate or change the answer already shown.
  let earlier = 'no Load earlier button';
  const loadEarlier = page.locator('button[data-role=load-earlier]');
  if ((await loadEarlier.count()) > 0 && (await loadEarlier.first().isEnabled())) {
    await loadEarlier.first().click({ timeout: 5_000 });
    await sleep(1_000);
    const after = await answers(page);
    const copies = after.filter((a) => a.serial === outcome.serial);
    check(after.length === 1 && copies.length === 1, `after Load earlier the page shows ${after.length} answers (${copies.length} with serial ${outcome.serial})`);
    check(compareTexts(copies[0].text, published.text).same && copies[0].status === 'completed', 'Load earlier changed the answer');
    earlier = `Load earlier left it alone (button ${(await loadEarlier.count()) > 0 ? 'still there' : 'gone'} afterwards)`;
  }
  return `its text appeared whole with data-status=completed${transient}; text ${how} to history (${published.text.length} chars); ${earlier}`;
}

// ---------------------------------------------------------------------------------------
// 4: markup in an answer is text

async function xss(ctx) {
  const { page, seen } = await ctx.open(pageUrl(ctx.channel));
  await waitConnected(page);
  await sleep(300);
  const run = ask(ctx, ctx.channel, 'xss', 'browser test: markup', ctx.sys.xssReplayUrl);
  const outcome = await askCompleted(run);
  const final = await waitTerminal(page, outcome.serial);
  const published = await publishedAnswer(ctx.sys.sockudoUrl, ctx.channel, outcome.serial);
  check(published.text === outcome.text, 'history text differs from what ask streamed');
  for (const literal of XSS_LITERALS) {
    check(published.text.includes(literal), `the recording did not publish ${literal}`);
  }
  await sleep(700); // time for an onerror or a script to fire, if one got in

  const found = await page.evaluate(() => {
    const answer = document.querySelector('[data-role=answer]');
    const inAnswer = (selector) => (answer ? answer.querySelectorAll(selector).length : -1);
    const handlers = [];
    for (const element of document.querySelectorAll('*')) {
      for (const attribute of element.attributes) {
        if (attribute.name.toLowerCase().startsWith('on')) handlers.push(`${element.tagName}[${attribute.name}]`);
      }
    }
    const jsUrls = [...document.querySelectorAll('[href],[src],[action],[formaction]')]
      .map((e) => e.getAttribute('href') ?? e.getAttribute('src') ?? e.getAttribute('action') ?? e.getAttribute('formaction'))
      .filter((v) => /^\s*javascript:/i.test(v ?? ''));
    const links = answer ? [...answer.querySelectorAll('a')].map((a) => ({ text: a.textContent, href: a.getAttribute('href') })) : [];
    return {
      img: inAnswer('img'),
      script: inAnswer('script'),
      others: inAnswer('iframe, svg, object, embed, frame, style, link, meta, form'),
      handlers,
      jsUrls,
      links,
      text: answer?.querySelector('[data-role=text]')?.textContent ?? null,
      html: answer?.querySelector('[data-role=text]')?.innerHTML ?? null,
    };
  });
  check(found.img === 0, `the answer contains ${found.img} img element(s): ${found.html}`);
  check(found.script === 0, `the answer contains ${found.script} script element(s): ${found.html}`);
  check(found.others === 0, `the answer contains iframe/svg/object/embed/style/link/meta/form elements: ${found.html}`);
  check(found.handlers.length === 0, `elements with event-handler attributes: ${found.handlers.join(', ')}`);
  check(found.jsUrls.length === 0, `javascript: URLs on the page: ${found.jsUrls.join(', ')}`);
  check(seen.dialogs.length === 0, `dialogs fired: ${seen.dialogs.join('; ')}`);
  const imgRequests = seen.requests.filter((r) => /\/x(\?|$)/.test(r));
  check(imgRequests.length === 0, `the page requested the img's src: ${imgRequests.join(', ')}`);
  check(final.status === 'completed', `the answer ended data-status=${final.status}`);
  for (const literal of XSS_LITERALS) {
    check(
      normalise(found.text).includes(literal),
      `${literal} is not shown as text; the answer's text is ${JSON.stringify(normalise(found.text))}`,
    );
  }
  let link;
  if (normalise(found.text).includes(XSS_LINK)) link = 'the Markdown javascript: link is shown as literal text';
  else if (found.links.length === 0) link = 'the Markdown javascript: link is rendered as its plain text, without an a element';
  else link = `links in the answer: ${JSON.stringify(found.links)}`;
  return `no img/script/iframe/svg elements, no on* attributes, no javascript: URLs, no dialog; the img and script payloads are shown as text; ${link}`;
}

// ---------------------------------------------------------------------------------------
// 5: a prompt from the page, stopped with its Stop button

async function stop(ctx) {
  const { page } = await ctx.open(pageUrl(ctx.channel));
  await waitConnected(page);
  const prompt = `browser test: please stop me ${ctx.channel.slice(-8)}`;
  const form = page.locator('form[data-role=prompt-form]');
  await form.locator('textarea[name=prompt]').fill(prompt, { timeout: 5_000 });
  await form.locator('button[type=submit]').click({ timeout: 5_000 });
  await waitFor(
    async () => (await page.locator('[data-role=prompt]').allTextContents()).some((t) => t.includes(prompt)),
    { timeout: 10_000, what: 'the prompt to be shown as [data-role=prompt]' },
  );
  const streaming = await waitAnswer(page, null, (a) => a.status === 'streaming' && a.text && a.text.length > 20 && a.stop, {
    timeout: 15_000,
    what: 'a streaming answer with text and a Stop button',
  });
  const serial = streaming.serial;
  const shownAtClick = streaming.text.length;
  await page.locator(`[data-role=answer][data-serial="${serial}"] button[data-role=stop]`).click({ timeout: 5_000 });
  const final = await waitTerminal(page, serial, 15_000);
  check(final.status === 'cancelled', `after Stop the answer ended data-status=${final.status}`);
  check(!final.stop, 'the cancelled answer still has a Stop button');
  const published = await publishedAnswer(ctx.sys.sockudoUrl, ctx.channel, serial);
  check(published.status === 'cancelled', `history says ${published.status}`);
  const how = sameText(final.text, published.text);
  const prompts = (await history(ctx.sys.sockudoUrl, ctx.channel)).filter((m) => m.name === 'prompt');
  check(prompts.some((m) => m.data === prompt), 'history has no prompt message with the typed text');
  textsOnlyGrew((await notes(page)).answers[serial], published.text);
  return (
    `prompt shown and published; Stop clicked at ${shownAtClick} chars; ended cancelled with ` +
    `${published.text.length} chars, text ${how} to history`
  );
}

// ---------------------------------------------------------------------------------------
// 10: the publisher dies mid-answer (SIGKILL): the page shows the answer stalled once its
// lease lapses, from the channel's data alone (`publisher ask` keeps no ledger, so nobody
// ends the answer here; the daemon's sweeper is tested in tests/tests/publisher_crash.rs)

async function stalled(ctx) {
  const run = await askStreaming(
    ctx, 'synth:tokens=600,rate=20', 'browser test: a publisher that dies', 60, 'the publisher could be killed',
  );
  const { page } = await ctx.open(pageUrl(ctx.channel));
  const live = await waitAnswer(page, null, (a) => a.status === 'streaming' && a.text, {
    what: 'the streaming answer',
  });
  check(live.stalled === 'false', `a live answer shows data-stalled=${live.stalled}`);
  run.proc.child.kill('SIGKILL');
  const killed = Date.now();
  const shown = await waitAnswer(page, live.serial, (a) => a.stalled === 'true', {
    timeout: 20_000,
    what: 'the answer to show as stalled',
  });
  const after = (Date.now() - killed) / 1000;
  check(after <= 12.5, `stalled shown only ${after.toFixed(1)} s after the kill (lease 10 s)`);
  check(shown.status === 'streaming', `a stalled answer says data-status=${shown.status}`);
  check(/stalled/.test(shown.badge ?? ''), `the badge says ${JSON.stringify(shown.badge)}`);
  // A viewer that arrives later sees the same, from rewind alone.
  const { page: late } = await ctx.open(pageUrl(ctx.channel));
  const seen = await waitAnswer(late, live.serial, (a) => a.stalled === 'true', {
    timeout: 5_000,
    what: 'a late viewer to show the answer stalled',
  });
  return (
    `killed the publisher at ${normalise(live.text).length}+ chars; stalled shown ${after.toFixed(1)} s later, ` +
    `still data-status=${shown.status}; a late viewer showed it stalled too (${normalise(seen.text).length} chars)`
  );
}

// ---------------------------------------------------------------------------------------
// 6: the network drops mid-stream

async function reconnect(ctx) {
  const { page } = await ctx.open(pageUrl(ctx.channel));
  await waitConnected(page);
  await sleep(300);
  const run = ask(ctx, ctx.channel, 'synth:tokens=240,rate=30', 'browser test: reconnect');
  const streaming = await waitAnswer(page, null, (a) => a.status === 'streaming' && a.text && a.text.length > 40, {
    what: 'the answer to stream',
  });
  const serial = streaming.serial;
  const cutAt = await page.evaluate(() => Math.round(performance.now()));
  const streamedAtCut = run.text().length;
  const refusedBefore = ctx.sys.proxy.stats.refused;
  const cut = ctx.sys.proxy.cut();
  ctx.sys.proxy.refuseFor(2_000);
  const cutTime = Date.now();
  check(cut >= 1, 'there was no connection through the proxy to cut');

  await waitFor(
    async () => (await notes(page)).connection.some((n) => n.t > cutAt && n.state !== 'connected'),
    {
      timeout: 10_000,
      what: 'the connection indicator to leave connected after the cut',
      seen: async () => `data-connection-state=${await connectionState(page)}`,
    },
  );
  await sleep(500);
  await ctx.shot('disconnected');
  await waitFor(
    async () => {
      const states = (await notes(page)).connection.filter((n) => n.t > cutAt);
      return states.length >= 2 && states.at(-1).state === 'connected';
    },
    {
      timeout: 30_000,
      what: 'the connection indicator to come back to connected',
      seen: async () => describeStates((await notes(page)).connection, cutAt),
    },
  );
  const back = ((Date.now() - cutTime) / 1000).toFixed(1);
  const final = await waitTerminal(page, serial, 30_000);
  const outcome = await askCompleted(run);
  check(streamedAtCut < outcome.text.length, 'the answer had finished streaming before the cut');
  const published = await publishedAnswer(ctx.sys.sockudoUrl, ctx.channel, serial);
  check(final.status === 'completed', `the answer ended data-status=${final.status}`);
  const how = sameText(final.text, published.text);
  const recorded = await notes(page);
  textsOnlyGrew(recorded.answers[serial], published.text);
  return (
    `cut ${cut} connection(s) at ${streamedAtCut}/${outcome.text.length} chars, refused ` +
    `${ctx.sys.proxy.stats.refused - refusedBefore} reconnect(s) for 2 s; states ` +
    `${describeStates(recorded.connection, cutAt)}; connected again after ~${back} s; ` +
    `completed, text ${how} to history`
  );
}

// ---------------------------------------------------------------------------------------
// 7: the key never reaches the page

async function noKeyInPage(ctx) {
  const { page, seen } = await ctx.open(pageUrl(ctx.channel));
  await waitConnected(page);
  await sleep(300);
  const outcome = await askCompleted(ask(ctx, ctx.channel, 'synth:tokens=30,rate=0', 'browser test: no key'));
  await waitTerminal(page, outcome.serial);
  await Promise.all(seen.bodyReads);

  const urls = seen.responses.map((r) => r.url);
  const configSeen = urls.some((u) => u.startsWith(`${DAEMON_URL}/v1/config`));
  const tokenSeen = urls.some((u) => u.startsWith(`${DAEMON_URL}/v1/token`));
  const exchangeSeen = urls.some((u) => /\/keys\/[^/]+\/requestToken/.test(u));
  check(configSeen, 'the page never fetched /v1/config');
  check(tokenSeen, 'the page never fetched /v1/token');
  check(exchangeSeen, `no REST token exchange (/keys/…/requestToken) seen; responses: ${urls.join(', ')}`);

  const stored = await page.evaluate(() => {
    const dump = (storage) => {
      const out = {};
      for (let i = 0; i < storage.length; i += 1) out[storage.key(i)] = storage.getItem(storage.key(i));
      return out;
    };
    return {
      local: dump(window.localStorage),
      session: dump(window.sessionStorage),
      cookie: document.cookie,
      html: document.documentElement.outerHTML,
    };
  });
  const cookies = await ctx.context.cookies();
  const where = [];
  if (JSON.stringify(stored.local).includes(KEY_SECRET)) where.push('localStorage');
  if (JSON.stringify(stored.session).includes(KEY_SECRET)) where.push('sessionStorage');
  if (stored.cookie.includes(KEY_SECRET) || JSON.stringify(cookies).includes(KEY_SECRET)) where.push('cookies');
  if (stored.html.includes(KEY_SECRET)) where.push('the DOM');
  check(where.length === 0, `the key secret is in ${where.join(', ')}`);
  check(seen.leaks.length === 0, seen.leaks.join('; '));
  const sockets = seen.websockets.map((w) => w.url.replace(/access_token=[^&]+/, 'access_token=…')).join(', ');
  check(!seen.websockets.some((w) => /[?&]key=/.test(w.url)), `a WebSocket URL carries key=: ${sockets}`);
  const bodies = seen.responses.filter((r) => r.bytes !== null).length;
  return (
    `${seen.responses.length} responses (${bodies} bodies read, incl. /v1/config, /v1/token and the ` +
    `token exchange), ${seen.websockets.length} WebSocket(s) and their frames, requests, ` +
    `localStorage (${Object.keys(stored.local).length} keys), sessionStorage ` +
    `(${Object.keys(stored.session).length} keys), cookies and the DOM: no '${KEY_SECRET}', no Basic auth; ` +
    `WebSocket ${sockets}`
  );
}

// ---------------------------------------------------------------------------------------
// 8: the seed guide's JS publisher (official ably and openai clients) streams to the page

const INTEROP = path.join(ROOT, 'tests', 'interop');

/**
 * Starts tests/interop/publisher.mjs, the guide's publisher, on `channel`. `line(event)`
 * is the first JSON line of that event printed so far (or null); `done` resolves to
 * { code, lines, stderr } once it exits.
 */
function startGuidePublisher(ctx, model, prompt) {
  check(
    fs.existsSync(path.join(INTEROP, 'node_modules', 'ably', 'package.json')),
    'tests/interop/node_modules is missing: run npm ci in tests/interop (scripts/test does it)',
  );
  const proc = new Proc(
    'guide-publisher',
    process.execPath,
    [
      path.join(INTEROP, 'publisher.mjs'),
      '--ably-endpoint', ctx.sys.sockudoUrl,
      '--ably-api-key', API_KEY,
      '--channel', ctx.channel,
      '--openai-base-url', ctx.sys.replayUrl,
      '--model', model,
      '--prompt', prompt,
    ],
    {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/' },
      keepAll: true,
      logFile: path.join(ARTIFACTS, '8-guide-publisher.publisher.log'),
    },
  );
  onCleanup('guide-publisher', () => proc.stop(3_000));
  const lines = () =>
    proc.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
  return {
    proc,
    line: (event) => lines().find((l) => l.event === event) ?? null,
    done: proc.exited.then((exit) => ({ code: exit.code, lines: lines(), stderr: proc.stderr })),
  };
}

async function guidePublisher(ctx) {
  const { page } = await ctx.open(pageUrl(ctx.channel));
  await waitConnected(page);
  await sleep(300); // let the channel attach
  // 120 appends: more than the page's rewind=100 counts on Sockudo, which counts versions.
  const run = startGuidePublisher(ctx, 'synth:tokens=120,rate=40', "browser test: the guide's publisher");
  const created = await waitFor(() => run.line('created') ?? run.line('error') ?? run.proc.exit, {
    timeout: 15_000,
    what: "the guide's publisher to create its message",
  });
  check(created.event === 'created', `the guide's publisher did not create its message: ${JSON.stringify(created)}\n${run.proc.tail()}`);
  const serial = created.serial;
  await waitAnswer(page, serial, (a) => a.text && a.text.length > 0, { what: `answer ${serial} to show text` });
  await ctx.shot('streaming');

  const outcome = await run.done;
  const done = outcome.lines.find((l) => l.event === 'done');
  check(outcome.code === 0 && done, `the guide's publisher exited ${outcome.code}:\n${run.proc.tail()}`);
  check(done.failedAppends.length === 0, `appends were refused: ${JSON.stringify(done.failedAppends)}`);
  const text = done.text;
  const shown = await waitFor(
    async () => {
      const answer = (await answers(page)).find((a) => a.serial === serial);
      return answer && compareTexts(answer.text ?? '', text).same ? answer : null;
    },
    {
      timeout: 10_000,
      what: `the page to show the whole text of ${serial}`,
      seen: async () => {
        const answer = (await answers(page)).find((a) => a.serial === serial);
        return answer ? compareTexts(answer.text ?? '', text).how : 'no such answer';
      },
    },
  );
  // The guide's answers carry no status header: the page reads them as streaming.
  check(shown.status === 'streaming', `the guide's answer shows data-status=${shown.status}, expected streaming`);
  check(shown.partial !== 'true', 'the answer streamed from its create says data-partial=true');
  const how = sameText(shown.text, text);
  const stored = (await history(ctx.sys.sockudoUrl, ctx.channel)).filter((m) => m.name === 'response');
  check(stored.length === 1 && stored[0].serial === serial, `history holds ${stored.length} answers`);
  check(stored[0].data === text, 'history text differs from what the guide appended');
  check(!stored[0].extras?.headers?.status, `history gives the guide's answer a status: ${stored[0].extras?.headers?.status}`);
  textsOnlyGrew((await notes(page)).answers[serial], text);

  // A page opened afterwards gets it from rewind, whole.
  const late = await ctx.open(pageUrl(ctx.channel));
  const lateShown = await waitFor(
    async () => {
      const answer = (await answers(late.page)).find((a) => a.serial === serial);
      return answer && compareTexts(answer.text ?? '', text).same ? answer : null;
    },
    {
      timeout: 15_000,
      what: `a page opened afterwards to show the whole text of ${serial}`,
      seen: () => describeAnswersOf(late.page, serial, text),
    },
  );
  const lateHow = sameText(lateShown.text, text);
  return (
    `the guide's publisher appended ${done.appends} deltas (${text.length} chars); the live page ` +
    `showed it growing and ended with its text ${how} (data-status=${shown.status}, as the guide ` +
    `sets no status); a page opened afterwards showed it ${lateHow} (data-status=${lateShown.status}, ` +
    `data-partial=${lateShown.partial})`
  );
}

async function describeAnswersOf(page, serial, text) {
  const list = await answers(page);
  const answer = list.find((a) => a.serial === serial);
  if (!answer) return `${list.length} answers, none with serial ${serial}`;
  return `status=${answer.status} partial=${answer.partial}: ${compareTexts(answer.text ?? '', text).how}`;
}

export const SCENARIOS = [
  { n: 0, name: '0-system', run: system, needsPage: false, timeout: 30_000 },
  { n: 1, name: '1-live-from-start', run: liveFromStart, timeout: 40_000 },
  { n: 2, name: '2-join-mid-stream', run: joinMidStream, timeout: 40_000 },
  { n: 3, name: '3-after-completion', run: afterCompletion, timeout: 30_000 },
  { n: 4, name: '4-xss-as-text', run: xss, timeout: 30_000 },
  { n: 5, name: '5-stop-button', run: stop, timeout: 40_000 },
  { n: 6, name: '6-reconnect-after-cut', run: reconnect, timeout: 60_000 },
  { n: 7, name: '7-no-key-in-page', run: noKeyInPage, timeout: 30_000 },
  { n: 8, name: '8-guide-publisher', run: guidePublisher, timeout: 45_000 },
  { n: 9, name: '9-local-model', run: localModel, timeout: 90_000 },
  { n: 10, name: '10-stalled-publisher', run: stalled, timeout: 60_000 },
];
