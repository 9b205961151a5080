// Finds Postfix's smtp-source and smtp-sink: on the PATH, in bench/.postfix (unpacked earlier), or
// unpacked now from Debian's package with `apt-get download` + `dpkg -x` (no install, no daemon).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';

export function findPostfixTools(benchDir) {
  const onPath = (name) => spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).stdout.trim();
  if (onPath('smtp-source') && onPath('smtp-sink')) return { source: onPath('smtp-source'), sink: onPath('smtp-sink'), env: {} };
  const root = path.join(benchDir, '.postfix');
  const local = () => ({
    source: path.join(root, 'usr/sbin/smtp-source'),
    sink: path.join(root, 'usr/sbin/smtp-sink'),
    env: { LD_LIBRARY_PATH: path.join(root, 'usr/lib/postfix') },
  });
  if (existsSync(local().source)) return local();
  mkdirSync(root, { recursive: true });
  const download = spawnSync('apt-get', ['download', 'postfix'], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  const deb = readdirSync(root).find((f) => f.startsWith('postfix_') && f.endsWith('.deb'));
  if (download.status !== 0 || !deb) return null;
  const unpack = spawnSync('dpkg', ['-x', deb, '.'], { cwd: root, encoding: 'utf8' });
  return unpack.status === 0 && existsSync(local().source) ? local() : null;
}
