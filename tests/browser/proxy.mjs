// A loopback TCP proxy between the browser and Sockudo that can break the network on
// demand: `cut()` resets every open connection in both directions at once (no FIN, no
// close frame), and `refuseFor(ms)` resets every new connection for a while, as a server
// that is unreachable would.

import net from 'node:net';

export class CutProxy {
  /** `targetPort`: where accepted connections are forwarded (on 127.0.0.1). */
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.port = 0;
    this.pairs = new Set();
    this.refuseUntil = 0;
    this.stats = { accepted: 0, refused: 0, cut: 0 };
    this.server = net.createServer((client) => this.#accept(client));
  }

  /** Listens on a free loopback port; resolves to it. */
  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.port = this.server.address().port;
    return this.port;
  }

  /** The number of connections currently relayed. */
  get open() {
    return this.pairs.size;
  }

  /** Resets every relayed connection, both sides; returns how many were cut. */
  cut() {
    const pairs = [...this.pairs];
    this.pairs.clear();
    for (const { client, upstream } of pairs) {
      reset(client);
      reset(upstream);
    }
    this.stats.cut += pairs.length;
    return pairs.length;
  }

  /** Resets every connection accepted during the next `ms` milliseconds. */
  refuseFor(ms) {
    this.refuseUntil = Date.now() + ms;
  }

  /** Stops listening and resets what is still open. */
  async close() {
    this.cut();
    await new Promise((resolve) => this.server.close(() => resolve()));
  }

  #accept(client) {
    if (Date.now() < this.refuseUntil) {
      this.stats.refused += 1;
      reset(client);
      return;
    }
    this.stats.accepted += 1;
    client.setNoDelay(true);
    const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
    upstream.setNoDelay(true);
    const pair = { client, upstream };
    this.pairs.add(pair);
    const forget = () => this.pairs.delete(pair);
    // An orderly end travels on (pipe ends the other side); an error resets the other side.
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => reset(upstream));
    upstream.on('error', () => reset(client));
    client.on('close', forget);
    upstream.on('close', forget);
  }
}

/** Destroys a socket with a TCP RST where possible. */
function reset(socket) {
  if (socket.destroyed) return;
  try {
    if (typeof socket.resetAndDestroy === 'function' && socket._handle) {
      socket.resetAndDestroy();
    } else {
      socket.destroy();
    }
  } catch {
    socket.destroy();
  }
}
