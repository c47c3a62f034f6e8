// Starting and stopping what the page needs: a local Sockudo, the cut-able proxy in front of
// it, the replay servers and the daemon on 127.0.0.1:8787; `publisher ask` runs; the
// channel history over REST. Everything started is registered for clean-up, which runs on
// success, on failure and on SIGINT/SIGTERM/SIGHUP; a last synchronous pass on process exit
// kills children and stops Sockudo if the orderly one never ran.

import { execFile, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { CutProxy } from './proxy.mjs';
import { Failure, sleep, stripAnsi, waitFor } from './util.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ARTIFACTS = path.join(ROOT, 'target', 'browser-artifacts');
// The daemon's binary: PUBLISHER_BIN (scripts/test passes the debug build it already has),
// else the release build.
export const PUBLISHER = process.env.PUBLISHER_BIN || path.join(ROOT, 'target', 'release', 'publisher');
export const SOCKUDO_SCRIPT = path.join(ROOT, 'scripts', 'sockudo');
export const WEB_DIST = path.join(ROOT, 'web', 'dist');
export const BROWSER_FIXTURES = path.join(ROOT, 'tests', 'browser', 'fixtures');

/** The local Sockudo's key (scripts/sockudo-config.sh) and its secret half. */
export const API_KEY = 'app-key:app-secret';
export const KEY_SECRET = API_KEY.slice(API_KEY.indexOf(':') + 1);
/** The daemon's port: the page's origin must be one Sockudo's CORS allows. */
export const DAEMON_PORT = 8787;
export const DAEMON_URL = `http://127.0.0.1:${DAEMON_PORT}`;

// ---------------------------------------------------------------------------------------
// Clean-up

const cleanups = [];
const liveChildren = new Set();
const liveSockudos = new Map(); // port -> directory

/** Registers `fn` to run (last registered first) when everything stops. */
export function onCleanup(name, fn) {
  cleanups.push({ name, fn });
}

let cleaning = null;
let interruptedBy = null;

/** Runs every registered clean-up once, last registered first, reporting failures. */
export function cleanupAll() {
  cleaning ??= (async () => {
    while (cleanups.length > 0) {
      const { name, fn } = cleanups.pop();
      try {
        await fn();
      } catch (error) {
        console.error(`clean-up of ${name} failed: ${error.message}`);
      }
    }
    cleaning = null;
  })();
  return cleaning;
}

const SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/** The signal that interrupted the run, if one did. */
export function interrupted() {
  return interruptedBy;
}

/** Cleans up and exits: 128 + the signal's number if a signal came, else `code`. */
export async function finish(code) {
  await cleanupAll();
  process.exit(interruptedBy ? 128 + SIGNALS[interruptedBy] : code);
}

/** On SIGINT/SIGTERM/SIGHUP: stop everything, then exit 128 + the signal's number. */
export function handleSignals() {
  for (const signal of Object.keys(SIGNALS)) {
    process.on(signal, () => {
      if (interruptedBy) return;
      interruptedBy = signal;
      console.error(`\n${signal}: stopping everything`);
      finish(1);
    });
  }
}

process.on('exit', () => {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const [port, dir] of liveSockudos) {
    spawnSync(SOCKUDO_SCRIPT, ['stop', String(port)], { env: sockudoEnv(), stdio: 'ignore' });
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------
// Ports

/** A port that was free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
export function portAccepts(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Fails with a clear message unless 127.0.0.1:`port` can be bound. */
async function requireFreePort(port, why) {
  const error = await new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', resolve);
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(null)));
  });
  if (error) {
    throw new Failure(
      `127.0.0.1:${port} is not free (${error.code}): ${why}. ` +
        `Stop what listens there (e.g. a running scripts/run) and try again.`,
    );
  }
}

// ---------------------------------------------------------------------------------------
// Processes

/** The environment of a publisher process: nothing inherited but PATH and HOME. */
function publisherEnv(extra) {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/', NO_COLOR: '1', ...extra };
}

/** `process.env` without SOCKUDO_DIR, so `scripts/sockudo stop PORT` looks the port up. */
function sockudoEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  if (!('SOCKUDO_DIR' in extra)) delete env.SOCKUDO_DIR;
  return env;
}

/** A child process whose output goes to a log file and is kept (in full, or its tail). */
export class Proc {
  constructor(name, command, args, { env, logFile, keepAll = false }) {
    this.name = name;
    this.keepAll = keepAll;
    this.stdout = '';
    this.stderr = '';
    this.exit = null;
    this.log = logFile ? fs.createWriteStream(logFile) : null;
    this.child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(this.child);
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', (chunk) => this.#take('stdout', chunk));
    this.child.stderr.on('data', (chunk) => this.#take('stderr', chunk));
    this.exited = new Promise((resolve) => {
      const finish = (exit) => {
        if (this.exit) return;
        this.exit = exit;
        liveChildren.delete(this.child);
        resolve(exit);
      };
      this.child.on('error', (error) => finish({ code: null, signal: null, error }));
      // 'close' waits for stdout/stderr to drain, so the output is complete.
      this.child.on('close', (code, signal) => finish({ code, signal }));
    });
  }

  #take(stream, chunk) {
    this.log?.write(chunk);
    const kept = this[stream] + chunk;
    this[stream] = this.keepAll ? kept : kept.slice(-20_000);
  }

  /** The last `lines` lines of stderr, without colours. */
  tail(lines = 15) {
    return stripAnsi(this.stderr).trimEnd().split('\n').slice(-lines).join('\n');
  }

  /** SIGTERM, then SIGKILL after `grace` ms; resolves once it has exited. */
  async stop(grace = 10_000) {
    if (!this.exit) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), grace);
      await this.exited;
      clearTimeout(timer);
    }
    await new Promise((resolve) => (this.log ? this.log.end(resolve) : resolve()));
  }
}

/** Runs a command to completion; resolves to { code, stdout, stderr }. */
function runCommand(command, args, { env, timeout }) {
  return new Promise((resolve) => {
    execFile(command, args, { cwd: ROOT, env, timeout, encoding: 'utf8' }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.code ?? 1) : 0, stdout, stderr, error });
    });
  });
}

// ---------------------------------------------------------------------------------------
// The servers

/** Starts a Sockudo on a free port; resolves to { port, url, dir }. */
export async function startSockudo() {
  const port = await freePort();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'browser-test-sockudo-'));
  // Registered before starting, so an interruption during start-up still stops it.
  liveSockudos.set(port, dir);
  onCleanup('sockudo', () => stopSockudo(port));
  const started = await runCommand(SOCKUDO_SCRIPT, ['start', String(port)], {
    env: sockudoEnv({ SOCKUDO_DIR: dir }),
    timeout: 60_000,
  });
  if (started.code !== 0) {
    throw new Failure(
      `scripts/sockudo start ${port} failed (${started.code}):\n${started.stdout}${started.stderr}`,
    );
  }
  return { port, url: `http://127.0.0.1:${port}`, dir };
}

async function stopSockudo(port) {
  const dir = liveSockudos.get(port);
  const stopped = await runCommand(SOCKUDO_SCRIPT, ['stop', String(port)], {
    env: sockudoEnv(),
    timeout: 30_000,
  });
  if (stopped.code !== 0) {
    console.error(`scripts/sockudo stop ${port}: ${stopped.stdout}${stopped.stderr}`);
    return;
  }
  if (dir) {
    await fsp.copyFile(path.join(dir, 'sockudo.log'), path.join(ARTIFACTS, 'sockudo.log')).catch(() => {});
    await fsp.rm(dir, { recursive: true, force: true });
  }
  liveSockudos.delete(port);
}

/** Starts the cut-able proxy in front of 127.0.0.1:`targetPort`. */
export async function startProxy(targetPort) {
  const proxy = new CutProxy(targetPort);
  await proxy.start();
  onCleanup('proxy', () => proxy.close());
  return proxy;
}

/** Fails with the process's last log lines if it has exited. */
function requireRunning(proc) {
  if (proc.exit) {
    const how = proc.exit.error ? proc.exit.error.message : `exit code ${proc.exit.code}, signal ${proc.exit.signal}`;
    throw new Failure(`${proc.name} exited during start-up (${how}):\n${proc.tail()}`);
  }
}

/** Starts `publisher replay` on a free port serving `dir`; resolves to { url, proc }. */
export async function startReplay(dir, name) {
  const port = await freePort();
  const proc = new Proc(name, PUBLISHER, ['replay', '--listen', `127.0.0.1:${port}`, '--dir', dir], {
    env: publisherEnv({ LOG: 'info' }),
    logFile: path.join(ARTIFACTS, `${name}.log`),
  });
  onCleanup(name, () => proc.stop());
  await waitFor(
    async () => {
      requireRunning(proc);
      return portAccepts(port);
    },
    { timeout: 15_000, what: `${name} to listen on 127.0.0.1:${port}` },
  );
  return { url: `http://127.0.0.1:${port}/v1`, proc };
}

/**
 * Starts `publisher serve` on 127.0.0.1:8787, talking to Sockudo directly and telling pages
 * to use the proxy; resolves once /healthz says it is connected.
 */
export async function startDaemon({ sockudoUrl, publicUrl, openaiUrl, model, webDir }) {
  await requireFreePort(
    DAEMON_PORT,
    'the daemon must listen there because the page is served from it and Sockudo\'s CORS ' +
      'only allows the origins http://127.0.0.1:8787 and :8080',
  );
  const args = ['serve', '--listen', `127.0.0.1:${DAEMON_PORT}`];
  if (webDir) args.push('--web-dir', webDir);
  const proc = new Proc('daemon', PUBLISHER, args, {
    env: publisherEnv({
      LOG: 'info',
      ABLY_API_KEY: API_KEY,
      ABLY_ENDPOINT: sockudoUrl,
      PUBLIC_ABLY_ENDPOINT: publicUrl,
      OPENAI_BASE_URL: openaiUrl,
      OPENAI_API_KEY: 'test',
      OPENAI_MODEL: model,
    }),
    logFile: path.join(ARTIFACTS, 'daemon.log'),
  });
  onCleanup('daemon', () => proc.stop());
  await waitFor(
    async () => {
      requireRunning(proc);
      try {
        const response = await fetch(`${DAEMON_URL}/healthz`);
        return response.status === 200;
      } catch {
        return false;
      }
    },
    { timeout: 20_000, interval: 100, what: 'the daemon\'s /healthz to answer 200' },
  );
  return proc;
}

// ---------------------------------------------------------------------------------------
// Answers and history

let askCount = 0;

/**
 * Starts `publisher ask`: one answer to `prompt` on `channel` from `model` at `openaiUrl`.
 * `done` resolves to { code, text, serial, status, stderr } when it exits; `text()` is what
 * it has printed so far.
 */
export function startAsk({ sockudoUrl, openaiUrl, channel, model, prompt }) {
  askCount += 1;
  const name = `ask-${askCount}`;
  const proc = new Proc(
    name,
    PUBLISHER,
    [
      'ask',
      '--channel', channel,
      '--ably-endpoint', sockudoUrl,
      '--ably-api-key', API_KEY,
      '--openai-base-url', openaiUrl,
      '--openai-api-key', 'test',
      '--openai-model', model,
      prompt,
    ],
    { env: publisherEnv({ LOG: 'warn' }), keepAll: true, logFile: path.join(ARTIFACTS, `${name}.log`) },
  );
  onCleanup(name, () => proc.stop(3_000));
  const done = proc.exited.then((exit) => {
    const stderr = stripAnsi(proc.stderr);
    return {
      code: exit.code,
      text: proc.stdout,
      serial: stderr.match(/^serial: (\S+)$/m)?.[1] ?? null,
      status: stderr.match(/^status: (\S+)/m)?.[1] ?? null,
      stderr,
    };
  });
  return { proc, done, text: () => proc.stdout };
}

/** Fails unless an `ask` run completed; returns its outcome. */
export async function askCompleted(ask) {
  const outcome = await ask.done;
  if (outcome.code !== 0 || outcome.status !== 'completed') {
    throw new Failure(
      `publisher ask ended with code ${outcome.code}, status ${outcome.status}:\n${outcome.stderr.trim().split('\n').slice(-8).join('\n')}`,
    );
  }
  return outcome;
}

/** The channel's history over REST, newest first (at most 100 messages). */
export async function history(sockudoUrl, channel) {
  const url = `${sockudoUrl}/channels/${encodeURIComponent(channel)}/messages?limit=100`;
  const response = await fetch(url, {
    headers: { authorization: `Basic ${Buffer.from(API_KEY).toString('base64')}` },
  });
  if (response.status !== 200) {
    throw new Failure(`history of ${channel}: HTTP ${response.status} ${await response.text()}`);
  }
  return (await response.json()).map((message) => ({ ...message, data: decodeData(message) }));
}

function decodeData(message) {
  let data = message.data;
  const steps = (message.encoding ?? '').split('/').filter(Boolean).reverse();
  for (const step of steps) {
    if (step === 'base64') data = Buffer.from(data, 'base64');
    else if (step === 'utf-8') data = Buffer.from(data).toString('utf8');
    else if (step === 'json') data = JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  }
  return Buffer.isBuffer(data) ? data.toString('utf8') : data;
}

/**
 * Waits until history holds the answer `serial` with a terminal status; resolves to
 * { text, status, message }.
 */
export async function publishedAnswer(sockudoUrl, channel, serial, { timeout = 10_000 } = {}) {
  let last = null;
  return waitFor(
    async () => {
      const messages = await history(sockudoUrl, channel);
      last = messages.find((m) => m.name === 'response' && m.serial === serial) ?? null;
      const status = last?.extras?.headers?.status ?? 'streaming';
      if (last && status !== 'streaming') return { text: last.data ?? '', status, message: last };
      return null;
    },
    {
      timeout,
      interval: 150,
      what: `history of ${channel} to hold answer ${serial} with a terminal status`,
      seen: () => (last ? `status ${last.extras?.headers?.status ?? '(none)'}` : 'no such answer'),
    },
  );
}

export { sleep };
