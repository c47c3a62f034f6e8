#!/usr/bin/env node
// The seed guide's subscriber, with the official ably@2 client: it keeps each answer's text
// by the message's serial and follows `message.action`: `message.create` starts an answer
// with its data, `message.append` adds its data, `message.update` replaces the text with its
// data (the whole answer so far), `message.delete` removes it. With `--rewind` (e.g. `2m`,
// as in the guide, or a count such as `10`) it attaches with that channel param and gets
// earlier answers whole.
//
// It runs until stdin closes (or SIGTERM), then prints the answers it holds and exits 0.
// Each answer's status is its `extras.headers.status`; no header reads as `streaming`.
//
// Output (JSON lines):
//   {"event":"attached","rewind":R}
//   {"event":"message","action":A,"name":N,"serial":S,"versionSerial":V,"data":D,"headers":H}
//   {"event":"answer","serial":S,"name":N,"text":T,"status":ST,"deleted":B}   after each message
//   {"event":"answers","answers":[{serial,name,text,status,deleted}, ...]}   when told to stop
//   {"event":"closed","state":...}
//   {"event":"error","message":...}  then exit 1 (error), 2 (usage) or 3 (timeout)

import { Ably, ablyOptions, closeRealtime, describeMessage, emit, fail, guard, options } from './common.mjs';

const USAGE = `usage: node subscriber.mjs --ably-endpoint URL --ably-api-key KEY --channel ai:NAME
         [--ably-protocol json|msgpack] [--rewind 2m|N] [--timeout-ms MS]`;

const opts = options(
  {
    'ably-endpoint': null,
    'ably-api-key': null,
    'ably-protocol': '',
    channel: null,
    rewind: '',
    'timeout-ms': '60000',
  },
  USAGE,
);

const realtime = new Ably.Realtime(ablyOptions(opts['ably-endpoint'], opts['ably-api-key'], opts['ably-protocol']));
const channel = opts.rewind
  ? realtime.channels.get(opts.channel, { params: { rewind: opts.rewind } })
  : realtime.channels.get(opts.channel);

/** Answers by serial: { name, text, status, deleted }. */
const answers = new Map();

function statusOf(message) {
  return message.extras?.headers?.status ?? 'streaming';
}

function onMessage(message) {
  emit('message', describeMessage(message));
  const data = typeof message.data === 'string' ? message.data : '';
  const known = answers.get(message.serial);
  switch (message.action) {
    case 'message.create':
      answers.set(message.serial, { name: message.name, text: data, status: statusOf(message), deleted: false });
      break;
    case 'message.append':
      // Only the new fragment: add it to what is there (or start from it, having missed
      // the create).
      answers.set(message.serial, {
        name: message.name ?? known?.name,
        text: (known?.text ?? '') + data,
        status: statusOf(message),
        deleted: false,
      });
      break;
    case 'message.update':
      // The whole answer so far: replace.
      answers.set(message.serial, { name: message.name, text: data, status: statusOf(message), deleted: false });
      break;
    case 'message.delete':
      answers.set(message.serial, { name: message.name ?? known?.name, text: '', status: statusOf(message), deleted: true });
      break;
    default:
      return;
  }
  emit('answer', { serial: message.serial, ...answers.get(message.serial) });
}

guard(Number(opts['timeout-ms']), async (why) => {
  emit('answers', {
    why,
    answers: [...answers].map(([serial, answer]) => ({ serial, ...answer })),
  });
  emit('closed', { state: await closeRealtime(realtime) });
  process.exit(0);
});

try {
  await channel.subscribe(onMessage);
} catch (error) {
  fail(1, `could not attach ${opts.channel}: ${error?.message ?? error}`);
}
emit('attached', { rewind: opts.rewind || null });
