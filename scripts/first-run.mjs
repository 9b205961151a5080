#!/usr/bin/env node
// The first-run step shared by `npm start`, `npm test` and `npm run bench` (issue 15): on a fresh
// clone it installs the locked dependencies (`npm ci`), then builds `dist/` when it is missing or
// older than the sources, so each of the three commands works first, in any order.
//   node scripts/first-run.mjs            install if needed, build if stale (npm start)
//   node scripts/first-run.mjs --build    install if needed, always build (npm test, npm run bench:
//                                         the tests spawn dist/main.js and must never meet an old one)
// Imported, it exports the same steps (scripts/start.mjs uses them).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const mainJs = path.join(root, 'dist', 'main.js');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function npmRun(args) {
  const result = spawnSync(npm, args, { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

/** The dependency names package.json asks for that node_modules does not hold (all of them on a fresh clone). */
function missingDependencies() {
  const manifest = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  const names = [...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.devDependencies ?? {})];
  return names.filter((name) => !existsSync(path.join(root, 'node_modules', name, 'package.json')));
}

/** `npm ci` when node_modules is absent or lacks a dependency package.json names (say, after a pull added one). */
export function ensureDependencies() {
  const missing = existsSync(path.join(root, 'node_modules', '.package-lock.json')) ? missingDependencies() : ['(node_modules)'];
  if (missing.length === 0) return;
  console.error(`smtp-graph-relay: installing dependencies (first run; missing: ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''})...`);
  npmRun(['ci', '--no-audit', '--no-fund']);
}

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(full) : statSync(full).mtimeMs);
  }
  return newest;
}

/** Builds dist/ when asked to, or when dist/main.js is missing or older than src/ or the tsconfig files. */
export function ensureBuild({ always = false } = {}) {
  const inputs = Math.max(newestMtime(path.join(root, 'src')), ...['tsconfig.json', 'tsconfig.build.json'].map((f) => statSync(path.join(root, f)).mtimeMs));
  if (!always && existsSync(mainJs) && inputs <= statSync(mainJs).mtimeMs) return;
  if (!always) console.error('smtp-graph-relay: building...');
  npmRun(['run', 'build', '--silent']);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  ensureDependencies();
  ensureBuild({ always: process.argv.includes('--build') });
}
