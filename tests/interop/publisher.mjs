#!/usr/bin/env node
// The seed guide's publisher, with the official clients (openai@4, ably@2): one streamed
// Responses answer becomes one Ably message. On `response.created` it publishes an empty
// message named `response` and keeps the serial from the publish result; every
// `response.output_text.delta` of the message item is appended to that message with
// `appendMessage`, not awaited one by one. The guide sets no headers and sends no final
// update, and neither does this.
//
// Unlike the guide, which leaves its process running, it then waits for the appends'
// acknowledgements, closes the connection and exits, so a test knows when it is over.
//
// Output (JSON lines):
//   {"event":"created","serial":S,"responseId":R}
//   {"event":"done","serial":S,"text":T,"appends":N,"failedAppends":[...],"terminal":TYPE,"responseId":R}
//   {"event":"closed","state":...}
//   {"event":"error","message":...}  then exit 1 (error), 2 (usage) or 3 (timeout)

import OpenAI from 'openai';

import { Ably, ablyOptions, closeRealtime, describeError, emit, fail, guard, note, options } from './common.mjs';
import { streamGuideAnswer } from './guide.mjs';

const USAGE = `usage: node publisher.mjs --ably-endpoint URL --ably-api-key KEY --channel ai:NAME
         --openai-base-url URL --model MODEL --prompt TEXT
         [--ably-protocol json|msgpack] [--openai-api-key KEY] [--timeout-ms MS]`;

const opts = options(
  {
    'ably-endpoint': null,
    'ably-api-key': null,
    'ably-protocol': '',
    channel: null,
    'openai-base-url': null,
    'openai-api-key': 'sk-interop-not-a-real-key',
    model: null,
    prompt: null,
    'timeout-ms': '30000',
  },
  USAGE,
);
guard(Number(opts['timeout-ms']));

// As in the guide: our own messages need not come back to us.
const realtime = new Ably.Realtime(ablyOptions(opts['ably-endpoint'], opts['ably-api-key'], opts['ably-protocol'], { echoMessages: false }));
const channel = realtime.channels.get(opts.channel);
const openai = new OpenAI({ apiKey: opts['openai-api-key'], baseURL: opts['openai-base-url'] });

async function main() {
  const answer = await streamGuideAnswer({
    openai,
    channel,
    model: opts.model,
    prompt: opts.prompt,
    onCreated: ({ serial, responseId }) => emit('created', { serial, responseId }),
  });
  const { serial, responseId, text, appends, terminal } = answer;
  if (!serial) fail(1, 'the stream never said response.created, so nothing was published');
  const results = await Promise.allSettled(appends);
  const failedAppends = results
    .map((result, index) => (result.status === 'rejected' ? { index, ...describeError(result.reason) } : null))
    .filter(Boolean);
  emit('done', { serial, text, appends: appends.length, failedAppends, terminal, responseId });
  emit('closed', { state: await closeRealtime(realtime) });
  process.exit(failedAppends.length === 0 ? 0 : 1);
}

main().catch((error) => {
  note(error?.stack ?? String(error));
  fail(1, `publisher failed: ${JSON.stringify(describeError(error))}`);
});
