/**
 * Prints the plain closing line "N passed, N failed, N skipped" that generic CI log readers
 * recognise, after vitest's own summary. Nothing is skipped silently (issue 16, item 4): "skipped"
 * counts skipped tests and also skipped files (a file whose tests were all skipped, or that
 * registered none, as the corpus suite did without ../shared/corpus), each named on a line above.
 * A file that failed to load and errors outside any test count as failures.
 */
import { writeFileSync } from 'node:fs';
import type { SerializedError } from 'vitest';
import type { Reporter, TestModule } from 'vitest/node';

export interface RunCounts {
  passed: number;
  failed: number;
  skippedTests: string[];
  skippedFiles: string[];
}

/** The counting, separate from vitest's objects' lifetimes so the line is simple to check. */
export function countRun(testModules: ReadonlyArray<TestModule>, unhandledErrors: number): RunCounts {
  const counts: RunCounts = { passed: 0, failed: unhandledErrors, skippedTests: [], skippedFiles: [] };
  for (const module of testModules) {
    const tests = [...module.children.allTests()];
    const state = module.state();
    if (state === 'failed' && tests.length === 0) counts.failed += 1; // did not even load
    else if (state === 'skipped' || tests.length === 0) counts.skippedFiles.push(module.relativeModuleId);
    for (const test of tests) {
      const result = test.result().state;
      if (result === 'passed') counts.passed += 1;
      else if (result === 'failed') counts.failed += 1;
      else counts.skippedTests.push(`${module.relativeModuleId} > ${test.fullName}`);
    }
  }
  return counts;
}

export function summaryLine(counts: RunCounts): string {
  const skipped = counts.skippedTests.length + counts.skippedFiles.length;
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  const detail = skipped === 0 ? '' : ` (${plural(counts.skippedTests.length, 'test')}, ${plural(counts.skippedFiles.length, 'file')})`;
  return `${counts.passed} passed, ${counts.failed} failed, ${skipped} skipped${detail}`;
}

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError>): void {
    const counts = countRun(testModules, unhandledErrors.length);
    for (const file of counts.skippedFiles) process.stdout.write(`\nskipped file: ${file}`);
    for (const test of counts.skippedTests) process.stdout.write(`\nskipped test: ${test}`);
    const line = summaryLine(counts);
    process.stdout.write(`\n${line}\n`);
    // .ci/run repeats it as its very last line, after the benchmark smoke run.
    writeFileSync('.ci-summary', `${line}\n`);
  }
}
