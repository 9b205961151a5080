/** A free loopback TCP port below the kernel's ephemeral range: see free-port.mjs. */
export declare function freePort(): Promise<number>;
