#!/usr/bin/env node
// `npm start`: installs dependencies and builds on first use (a fresh clone), then runs the relay
// with any arguments given after `npm start --`. Without --config it runs in demo mode.
import { spawnSync, spawn } from 'node:child_process';
import { existsSync, statSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const run = (args) => {
  const result = spawnSync(npm, args, { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
  if (result.status !== 0) process.exit(result.status ?? 1);
};

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(full) : statSync(full).mtimeMs);
  }
  return newest;
}

if (!existsSync(path.join(root, 'node_modules', '.package-lock.json'))) {
  console.error('smtp-graph-relay: installing dependencies (first run)...');
  run(['ci', '--no-audit', '--no-fund']);
}
const main = path.join(root, 'dist', 'main.js');
if (!existsSync(main) || newestMtime(path.join(root, 'src')) > statSync(main).mtimeMs) {
  console.error('smtp-graph-relay: building...');
  run(['run', 'build', '--silent']);
}
const child = spawn(process.execPath, [main, ...process.argv.slice(2)], { cwd: process.cwd(), stdio: 'inherit' });
// Ctrl+C reaches the child through the terminal's process group; forward only what targets us alone.
process.on('SIGINT', () => undefined);
for (const signal of ['SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
