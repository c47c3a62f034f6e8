#!/usr/bin/env node
// The benchmark's guide-side publisher: N answers at once from one process and one Ably
// connection, each streamed exactly as the guide does (guide.mjs). It reports each answer's
// serial and response id when created, then, once every append is acknowledged, the CPU
// time this process used (process.cpuUsage) and exits.
//
// Output (JSON lines):
//   {"event":"created","serial":S,"responseId":R,"prompt":P}
//   {"event":"done","answers":N,"appends":A,"failedAppends":F,"cpuSeconds":C}

import OpenAI from 'openai';

import { Ably, ablyOptions, closeRealtime, emit, fail, guard, options } from './common.mjs';
import { streamGuideAnswer } from './guide.mjs';

const USAGE = `usage: node bench-publisher.mjs --ably-endpoint URL --ably-api-key KEY --channel ai:NAME
         --openai-base-url URL --model MODEL --answers N --prompt-prefix TEXT [--timeout-ms MS]`;

const opts = options(
  {
    'ably-endpoint': null,
    'ably-api-key': null,
    'ably-protocol': '',
    channel: null,
    'openai-base-url': null,
    model: null,
    answers: '1',
    'prompt-prefix': 'bench question',
    'timeout-ms': '300000',
  },
  USAGE,
);
guard(Number(opts['timeout-ms']));

const started = process.cpuUsage();
const realtime = new Ably.Realtime(
  ablyOptions(opts['ably-endpoint'], opts['ably-api-key'], opts['ably-protocol'], { echoMessages: false }),
);
const channel = realtime.channels.get(opts.channel);
const openai = new OpenAI({ apiKey: 'sk-bench', baseURL: opts['openai-base-url'] });

async function one(index) {
  const prompt = `${opts['prompt-prefix']} ${index}`;
  const answer = await streamGuideAnswer({
    openai,
    channel,
    model: opts.model,
    prompt,
    onCreated: ({ serial, responseId }) => emit('created', { serial, responseId, prompt }),
  });
  const results = await Promise.allSettled(answer.appends);
  return { appends: results.length, failed: results.filter((r) => r.status === 'rejected').length };
}

async function main() {
  const count = Number(opts.answers);
  const outcomes = await Promise.all(Array.from({ length: count }, (_, i) => one(i)));
  const used = process.cpuUsage(started);
  emit('done', {
    answers: count,
    appends: outcomes.reduce((n, o) => n + o.appends, 0),
    failedAppends: outcomes.reduce((n, o) => n + o.failed, 0),
    cpuSeconds: (used.user + used.system) / 1e6,
  });
  await closeRealtime(realtime);
  process.exit(0);
}

main().catch((error) => fail(1, `bench publisher failed: ${error?.stack ?? error}`));
