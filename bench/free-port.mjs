/**
 * A loopback TCP port for a process that cannot be told to pick port 0 itself (a relay's config
 * file, PostgreSQL's -p), for the tests (test/helpers/free-port.ts) and the bench.
 *
 * Why not "bind port 0, read it, close": the kernel hands out port-0 binds from the same ephemeral
 * range (Linux: /proc/sys/net/ipv4/ip_local_port_range, 32768-60999 by default) as the source ports
 * of outgoing connections, so between our close and the relay's bind, any test's client connection
 * could take the port - a CI run saw "another process uses that port" for the admin address. A
 * port below that range is never taken by a connection; it is picked at random and checked by
 * binding it, so parallel test files rarely meet, and never silently.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';

/** The first port of the kernel's ephemeral range; null when it cannot be read (not Linux). */
function ephemeralStart() {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low !== undefined && Number.isInteger(low) && low > 0) return low;
  } catch {
    // not Linux
  }
  return null;
}

// Up to 12,000 ports just below the ephemeral range (Linux default: 20768-32767), never below 1024.
// A range that starts too low to leave room (some containers use 1024-65535) falls back to the
// old way, with a warning, rather than pick inside the range and race silently.
const START = ephemeralStart() ?? 32_768;
const LAST = START - 1;
const FIRST = Math.max(1024, START - 12_000);
const ROOM = LAST - FIRST + 1 >= 1000;
let warned = false;

function kernelPicked() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** @param {number} port @returns {Promise<boolean>} */
function bindable(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** @returns {Promise<number>} */
export async function freePort() {
  if (!ROOM) {
    if (!warned) process.stderr.write(`free-port: the ephemeral port range starts at ${START}, leaving no room below it; ports are picked by the kernel and may race with outgoing connections\n`);
    warned = true;
    return kernelPicked();
  }
  for (let tries = 0; tries < 200; tries++) {
    const port = FIRST + Math.floor(Math.random() * (LAST - FIRST + 1));
    if (await bindable(port)) return port;
  }
  throw new Error(`no free loopback port between ${FIRST} and ${LAST} after 200 tries`);
}
