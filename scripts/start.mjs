#!/usr/bin/env node
// `npm start`: installs dependencies and builds on first use (a fresh clone; the step is
// scripts/first-run.mjs, shared with npm test and npm run bench), then runs the relay with any
// arguments given after `npm start --`. Without --config it runs in demo mode.
import { spawn } from 'node:child_process';
import { ensureBuild, ensureDependencies, mainJs as main } from './first-run.mjs';

ensureDependencies();
ensureBuild();
const child = spawn(process.execPath, [main, ...process.argv.slice(2)], { cwd: process.cwd(), stdio: 'inherit' });
// Ctrl+C reaches the child through the terminal's process group; forward only what targets us alone.
process.on('SIGINT', () => undefined);
for (const signal of ['SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
