/** A free loopback TCP port below the kernel's ephemeral range; one copy for tests and bench (see bench/free-port.mjs for why). */
export { freePort } from '../../bench/free-port.mjs';
