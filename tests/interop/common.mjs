// What the interop scripts share: their command-line options, the Ably client options that
// point ably-js at a local Sockudo (or any endpoint URL), JSON-lines output on stdout, and
// the guards that make every script end: an overall deadline, a clean stop when stdin
// closes, and an exit on any uncaught error.
//
// stdout carries only JSON objects, one a line, each with an `event` field; everything
// human-readable (including ably-js's own log) goes to stderr.

import Ably from 'ably';

/** Writes one JSON line on stdout. */
export function emit(event, fields = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

/** Writes a line for people on stderr. */
export function note(text) {
  process.stderr.write(`${text}\n`);
}

/**
 * Reads `--name value` (or `--name=value`) options into an object. `defaults` lists every
 * option the script knows, with its default (null = required); an environment variable
 * (`--ably-endpoint` → `ABLY_ENDPOINT`) stands in for an option not given.
 */
export function options(defaults, usage) {
  const given = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      note(usage);
      process.exit(0);
    }
    if (!arg.startsWith('--')) fail(2, `unexpected argument ${JSON.stringify(arg)}\n${usage}`);
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    if (!(name in defaults)) fail(2, `unknown option --${name}\n${usage}`);
    if (eq > 0) given[name] = arg.slice(eq + 1);
    else if (i + 1 < argv.length) given[name] = argv[(i += 1)];
    else fail(2, `--${name} needs a value`);
  }
  const out = {};
  for (const [name, fallback] of Object.entries(defaults)) {
    const env = process.env[name.toUpperCase().replaceAll('-', '_')];
    const value = given[name] ?? env ?? fallback;
    if (value === null || value === undefined) fail(2, `--${name} is required\n${usage}`);
    out[name] = value;
  }
  return out;
}

/** Reports `message` as an `error` line and exits with `code`. */
export function fail(code, message) {
  emit('error', { message });
  note(`${process.argv[1]?.split('/').pop()}: ${message}`);
  process.exit(code);
}

/**
 * ably-js client options for an endpoint URL: `http://host:port` is plain `ws://` and
 * `http://` on that port (how a local Sockudo listens), `https://host[:port]` TLS; the wire
 * protocol `json` or `msgpack` ('' leaves ably-js's default); no fallback hosts, and
 * ably-js's log on stderr.
 */
export function ablyOptions(endpointUrl, key, protocol, extra = {}) {
  let url;
  try {
    url = new URL(endpointUrl);
  } catch {
    fail(2, `--ably-endpoint is no URL: ${JSON.stringify(endpointUrl)}`);
  }
  if (!['', 'json', 'msgpack'].includes(protocol)) fail(2, `--ably-protocol is json or msgpack, not ${protocol}`);
  const tls = url.protocol === 'https:';
  const port = url.port ? Number(url.port) : tls ? 443 : 80;
  return {
    key,
    endpoint: url.hostname,
    tls,
    ...(tls ? { tlsPort: port } : { port }),
    // Unless told, ably-js's own default, as the guide's code gets: MessagePack in Node.
    ...(protocol ? { useBinaryProtocol: protocol === 'msgpack' } : {}),
    fallbackHosts: [],
    logLevel: 1,
    logHandler: (message) => note(`ably: ${message}`),
    ...extra,
  };
}

/** The parts of an ably-js message a test checks, as plain JSON. */
export function describeMessage(message) {
  return {
    action: message.action ?? null,
    name: message.name ?? null,
    serial: message.serial ?? null,
    versionSerial: message.version?.serial ?? null,
    data: typeof message.data === 'string' ? message.data : (message.data ?? null),
    headers: message.extras?.headers ?? null,
  };
}

/** An ably-js ErrorInfo (or any error) as `{ code, statusCode, message }`. */
export function describeError(error) {
  return {
    code: error?.code ?? null,
    statusCode: error?.statusCode ?? null,
    message: String(error?.message ?? error),
  };
}

/**
 * Makes the script end whatever happens: after `ms` it reports a timeout and exits 3; an
 * uncaught error is reported and exits 1. `stop` (if given) runs once when stdin closes or
 * SIGTERM/SIGINT arrives, which is how a test asks a long-running script to finish.
 */
export function guard(ms, stop) {
  const deadline = setTimeout(() => fail(3, `timed out after ${ms} ms`), ms);
  deadline.unref();
  process.on('uncaughtException', (error) => fail(1, `uncaught: ${error?.stack ?? error}`));
  process.on('unhandledRejection', (error) => fail(1, `unhandled rejection: ${error?.stack ?? error}`));
  if (stop) {
    let stopping = false;
    const once = (why) => {
      if (stopping) return;
      stopping = true;
      Promise.resolve(stop(why)).catch((error) => fail(1, `while stopping: ${error?.stack ?? error}`));
    };
    process.stdin.on('end', () => once('stdin closed'));
    process.stdin.on('error', () => once('stdin failed'));
    process.stdin.resume();
    process.on('SIGTERM', () => once('SIGTERM'));
    process.on('SIGINT', () => once('SIGINT'));
  }
}

/** Closes an ably-js Realtime client, waiting up to `ms` for the `closed` state. */
export async function closeRealtime(realtime, ms = 3_000) {
  const state = realtime.connection.state;
  if (state === 'closed' || state === 'failed') return state;
  const closed = new Promise((resolve) => {
    realtime.connection.once('closed', () => resolve('closed'));
    realtime.connection.once('failed', () => resolve('failed'));
  });
  realtime.close();
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => resolve(`still ${realtime.connection.state} after ${ms} ms`), ms);
  });
  const how = await Promise.race([closed, late]);
  clearTimeout(timer);
  return how;
}

export { Ably };
