#!/usr/bin/env node
// A channel's history read with the official ably@2 REST client (`channel.history()`),
// following every page, newest first.
//
// Output (JSON lines):
//   {"event":"history","messages":[{action,name,serial,versionSerial,data,headers}, ...]}
//   {"event":"error","message":...}  then exit 1 (error), 2 (usage) or 3 (timeout)

import { Ably, ablyOptions, describeError, describeMessage, emit, fail, guard, options } from './common.mjs';

const USAGE = `usage: node history.mjs --ably-endpoint URL --ably-api-key KEY --channel ai:NAME
         [--ably-protocol json|msgpack] [--limit N] [--timeout-ms MS]`;

const opts = options(
  {
    'ably-endpoint': null,
    'ably-api-key': null,
    'ably-protocol': '',
    channel: null,
    limit: '100',
    'timeout-ms': '20000',
  },
  USAGE,
);
guard(Number(opts['timeout-ms']));

const rest = new Ably.Rest(ablyOptions(opts['ably-endpoint'], opts['ably-api-key'], opts['ably-protocol']));
const channel = rest.channels.get(opts.channel);

try {
  const messages = [];
  let page = await channel.history({ limit: Number(opts.limit) });
  for (;;) {
    messages.push(...page.items.map(describeMessage));
    if (!page.hasNext()) break;
    page = await page.next();
    if (!page) break;
  }
  emit('history', { messages });
  process.exit(0);
} catch (error) {
  fail(1, `history of ${opts.channel}: ${JSON.stringify(describeError(error))}`);
}
