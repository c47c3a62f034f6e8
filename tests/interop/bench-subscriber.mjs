#!/usr/bin/env node
// The benchmark's guide-side subscriber: the guide's subscriber logic (switch on
// message.action, keep text by serial) that also notes, for every message, the answer's
// text length (UTF-16 units) and the wall-clock time it arrived. When stdin closes it
// prints every answer's arrivals and exits.
//
// Output (JSON lines):
//   {"event":"attached"}
//   {"event":"answer","serial":S,"messages":M,"text":T,"arrivals":[[length, unixMs], ...]}

import { Ably, ablyOptions, closeRealtime, emit, guard, options } from './common.mjs';

const USAGE = `usage: node bench-subscriber.mjs --ably-endpoint URL --ably-api-key KEY --channel ai:NAME`;

const opts = options(
  { 'ably-endpoint': null, 'ably-api-key': null, 'ably-protocol': '', channel: null, 'timeout-ms': '600000' },
  USAGE,
);

const realtime = new Ably.Realtime(ablyOptions(opts['ably-endpoint'], opts['ably-api-key'], opts['ably-protocol']));
const channel = realtime.channels.get(opts.channel);
/** serial -> { text, messages, arrivals } */
const answers = new Map();
const now = () => performance.timeOrigin + performance.now();

function onMessage(message) {
  const at = now();
  const data = typeof message.data === 'string' ? message.data : '';
  const answer = answers.get(message.serial) ?? { text: '', messages: 0, arrivals: [] };
  switch (message.action) {
    case 'message.create':
    case 'message.update':
      answer.text = data;
      break;
    case 'message.append':
      answer.text += data;
      break;
    case 'message.delete':
      answer.text = '';
      break;
    default:
      return;
  }
  answer.messages += 1;
  answer.arrivals.push([answer.text.length, at]);
  answers.set(message.serial, answer);
}

guard(Number(opts['timeout-ms']), async () => {
  for (const [serial, answer] of answers) emit('answer', { serial, ...answer });
  await closeRealtime(realtime);
  // Lines can be long (every arrival of a 10,000-token answer): let stdout drain before
  // exiting, or the pipe gets a truncated line.
  await new Promise((resolve) => process.stdout.write('', resolve));
  process.exit(0);
});

await channel.subscribe(onMessage);
emit('attached');
