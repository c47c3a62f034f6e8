// Small helpers shared by the other modules: waiting, text comparison, names.

import crypto from 'node:crypto';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A scenario failure with a readable reason (no stack trace is printed for it). */
export class Failure extends Error {}

/** Throws a `Failure` with `reason` unless `condition` holds. */
export function check(condition, reason) {
  if (!condition) throw new Failure(typeof reason === 'function' ? reason() : reason);
}

/**
 * Calls `probe` every `interval` ms until it returns something truthy, and returns that.
 * Fails after `timeout` ms, saying what was awaited and, when given, what was last seen.
 */
export async function waitFor(probe, { timeout = 10_000, interval = 50, what, seen } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() >= deadline) {
      const last = seen ? `; last seen: ${await describe(seen)}` : '';
      throw new Failure(`timed out after ${(timeout / 1000).toFixed(1)} s waiting for ${what}${last}`);
    }
    await sleep(interval);
  }
}

async function describe(seen) {
  try {
    return await seen();
  } catch (error) {
    return `(unavailable: ${error.message})`;
  }
}

/** Rejects with a `Failure` if `promise` takes longer than `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`${what} took longer than ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The text as the page's rendering is compared: runs of whitespace (spaces, the newlines
 * Markdown blocks add) become one space, and the ends are trimmed. Nothing else changes.
 */
export function normalise(text) {
  return (text ?? '').replace(/\s+/g, ' ').trim();
}

/** Says how two texts compare: exactly, after whitespace normalisation, or where they differ. */
export function compareTexts(shown, published) {
  if (shown === published) return { same: true, how: 'exactly equal' };
  const a = normalise(shown);
  const b = normalise(published);
  if (a === b) return { same: true, how: 'equal after whitespace normalisation' };
  let at = 0;
  while (at < a.length && at < b.length && a[at] === b[at]) at += 1;
  const clip = (s) => JSON.stringify(s.slice(Math.max(0, at - 20), at + 40));
  return {
    same: false,
    how: `differ at char ${at} (shown ${a.length} chars, published ${b.length}): page ${clip(a)} vs history ${clip(b)}`,
  };
}

/** Whether `part` (normalised) is a prefix of `whole` (normalised). */
export function isPrefix(part, whole) {
  return normalise(whole).startsWith(normalise(part));
}

/** A channel for scenario `n`: `ai:browser-<n>-<random>`. */
export function channelFor(n) {
  return `ai:browser-${n}-${crypto.randomBytes(4).toString('hex')}`;
}

/** Seconds since `start` (a Date.now() value), one decimal. */
export function secondsSince(start) {
  return ((Date.now() - start) / 1000).toFixed(1);
}

/** Removes ANSI colour sequences (the publisher's logs use them). */
export function stripAnsi(text) {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001b\[[0-9;]*m/g, '');
}
