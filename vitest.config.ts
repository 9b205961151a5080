import { defineConfig } from 'vitest/config';

/**
 * Run after every other file, on a machine that is otherwise quiet: the three-relay cluster test
 * judges timing across processes (no request within a Retry-After the cluster knows of), and with
 * other files' relays and databases on the same two cores a pause took 120-400 ms to travel from
 * the relay that read the 429 to the others (CI runs of session 4 and 5).
 */
const ALONE = ['test/integration/pg-cluster.test.ts'];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests bind loopback ports and spawn relay processes; two workers match the 2-core machines.
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    projects: [
      { extends: true, test: { name: 'suite', include: ['test/**/*.test.ts'], exclude: ALONE } },
      { extends: true, test: { name: 'alone', include: ALONE, sequence: { groupOrder: 1 } } },
    ],
  },
});
