/**
 * No silent skips (issue 16, item 4). Outside CI a test whose tool or fixture is missing is skipped
 * (and the summary line counts it); with CI=true it fails instead, naming what is missing and where
 * CI installs it, because .ci/run promises every prerequisite on a clean machine.
 */
import { spawnSync } from 'node:child_process';
import { it, type TestFunction } from 'vitest';

export const IN_CI = /^(1|true|yes)$/i.test(process.env.CI ?? '');

export const hasTool = (program: string): boolean => spawnSync('sh', ['-c', `command -v ${program}`], { timeout: 5000 }).status === 0;

type TestRegistrar = (name: string, fn: TestFunction, timeout?: number) => void;

/**
 * `it` when `present`; otherwise `it.skip`, or under CI=true a test that fails with `missing`
 * ("swaks is not installed (.ci/run installs it)").
 */
export function itWhen(present: boolean, missing: string): TestRegistrar {
  if (present) return (name, fn, timeout) => it(name, fn, timeout);
  if (!IN_CI) return (name, fn, timeout) => it.skip(`${name} [skipped: ${missing}]`, fn, timeout);
  return (name) =>
    it(name, () => {
      throw new Error(`${missing}; CI=true treats a missing prerequisite as a failure, not a skip`);
    });
}

/** A test that needs the tool `program` (see itWhen). */
export const itWithTool = (program: string, installHint = `.ci/run installs it`): TestRegistrar => itWhen(hasTool(program), `${program} is not installed (${installHint})`);
