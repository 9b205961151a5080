/** Time as a dependency, so decisions (backoff, Retry-After, lifetime) are tested without sleeping. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
