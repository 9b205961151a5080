/**
 * A recording SpoolFs for simulated power cuts (issue 16, item 1). The spool runs on the real
 * disk; this layer keeps a model of what a power cut would leave: a file's content counts only as
 * of its last completed fsync/fdatasync, a directory's entries (creations, renames, links,
 * unlinks) only as of that directory's last completed fsync. Everything else is thrown away,
 * the pessimistic reading of POSIX that ext4 and XFS are allowed to take.
 *
 * A SIGKILL cannot show a missing or misplaced fsync (the kernel keeps every write of a killed
 * process); this can. The run is recorded once as a list of events (each completed sync, and the
 * test's own marks such as "this message got its 250"); the state at any cut point is rebuilt
 * from the events before it, written to a fresh directory and recovered there.
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import { realSpoolFs, type SpoolFs } from '../../src/spool/fs/spool-fs.js';

type Entries = Map<string, number>;

export type PowerEvent =
  | { type: 'file-sync'; ino: number; content: Buffer }
  | { type: 'dir-sync'; dir: string; entries: Entries }
  | { type: 'mark'; label: string; id: string };

/** What would be on the disk after a cut: per directory its entries, per file its content. */
export interface DurableState {
  dirs: Map<string, Entries>;
  contents: Map<number, Buffer>;
  /** The test's marks that happened before the cut, by label. */
  marks: Map<string, Set<string>>;
}

/** Records a run of the spool (through `fs`); the model follows only the operations that succeeded. */
export class PowerCutRecorder {
  readonly events: PowerEvent[] = [];
  private readonly current = new Map<string, Entries>();
  private readonly paths = new Map<number, Set<string>>();
  private readonly baseline: { dirs: Map<string, Entries>; contents: Map<number, Buffer> } = { dirs: new Map(), contents: new Map() };
  private nextIno = 1;

  /** `dirs`: the spool's area directories, which must exist; their current files count as durable. */
  constructor(private readonly dirs: string[]) {}

  async start(): Promise<void> {
    for (const dir of this.dirs) {
      const entries: Entries = new Map();
      for (const name of await readdir(dir)) {
        const ino = this.newIno(path.join(dir, name));
        entries.set(name, ino);
        this.baseline.contents.set(ino, await readFile(path.join(dir, name)));
      }
      this.current.set(dir, entries);
      this.baseline.dirs.set(dir, new Map(entries));
    }
  }

  mark(label: string, id: string): void {
    this.events.push({ type: 'mark', label, id });
  }

  private newIno(file: string): number {
    const ino = this.nextIno++;
    this.paths.set(ino, new Set([file]));
    return ino;
  }

  private entries(file: string): { entries: Entries | undefined; name: string } {
    return { entries: this.current.get(path.dirname(file)), name: path.basename(file) };
  }

  private lookup(file: string): number | undefined {
    const { entries, name } = this.entries(file);
    return entries?.get(name);
  }

  private setEntry(file: string, ino: number): void {
    const { entries, name } = this.entries(file);
    if (!entries) return;
    const replaced = entries.get(name);
    if (replaced !== undefined) this.paths.get(replaced)?.delete(file);
    entries.set(name, ino);
    this.paths.get(ino)?.add(file);
  }

  private removeEntry(file: string): number | undefined {
    const { entries, name } = this.entries(file);
    const ino = entries?.get(name);
    if (ino === undefined) return undefined;
    entries?.delete(name);
    this.paths.get(ino)?.delete(file);
    return ino;
  }

  /** The file's content now, read through any of its names (a file without a name keeps what it had). */
  private async contentOf(ino: number): Promise<Buffer | undefined> {
    for (const file of this.paths.get(ino) ?? []) {
      try {
        return await readFile(file);
      } catch {
        // renamed meanwhile: try its other names
      }
    }
    return undefined;
  }

  private watchFile(handle: FileHandle, ino: number): FileHandle {
    for (const method of ['sync', 'datasync'] as const) {
      const real = handle[method].bind(handle);
      handle[method] = async () => {
        // What was written before the call is durable once it returns.
        const content = await this.contentOf(ino);
        await real();
        if (content) this.events.push({ type: 'file-sync', ino, content });
      };
    }
    return handle;
  }

  private watchDir(handle: FileHandle, dir: string): FileHandle {
    for (const method of ['sync', 'datasync'] as const) {
      const real = handle[method].bind(handle);
      handle[method] = async () => {
        const entries = new Map(this.current.get(dir));
        await real();
        this.events.push({ type: 'dir-sync', dir, entries });
      };
    }
    return handle;
  }

  readonly fs: SpoolFs = {
    ...realSpoolFs,
    open: (async (file: string, flags?: string | number, mode?: number) => {
      const handle = await realSpoolFs.open(file, flags, mode);
      const name = String(file);
      if (this.current.has(name)) return this.watchDir(handle, name);
      let ino = this.lookup(name);
      if (ino === undefined) {
        ino = this.newIno(name);
        this.setEntry(name, ino);
      }
      return this.watchFile(handle, ino);
    }) as SpoolFs['open'],
    rename: (async (from: string, to: string) => {
      await realSpoolFs.rename(from, to);
      const ino = this.removeEntry(String(from));
      if (ino !== undefined) this.setEntry(String(to), ino);
    }) as SpoolFs['rename'],
    link: (async (from: string, to: string) => {
      await realSpoolFs.link(from, to);
      const ino = this.lookup(String(from));
      if (ino !== undefined) this.setEntry(String(to), ino);
    }) as SpoolFs['link'],
    unlink: (async (file: string) => {
      await realSpoolFs.unlink(file);
      this.removeEntry(String(file));
    }) as SpoolFs['unlink'],
  };

  /** The disk after a cut following the first `at` events. */
  stateAt(at: number): DurableState {
    const state: DurableState = { dirs: new Map([...this.baseline.dirs].map(([d, e]) => [d, new Map(e)])), contents: new Map(this.baseline.contents), marks: new Map() };
    for (const event of this.events.slice(0, at)) {
      if (event.type === 'file-sync') state.contents.set(event.ino, event.content);
      else if (event.type === 'dir-sync') state.dirs.set(event.dir, new Map(event.entries));
      else {
        const set = state.marks.get(event.label) ?? new Set<string>();
        set.add(event.id);
        state.marks.set(event.label, set);
      }
    }
    return state;
  }

  /** Writes a state under `root` (same layout, relative to `from`); a file never flushed is empty. */
  static async materialize(state: DurableState, from: string, root: string): Promise<void> {
    for (const [dir, entries] of state.dirs) {
      const target = path.join(root, path.relative(from, dir));
      await mkdir(target, { recursive: true });
      for (const [name, ino] of entries) await writeFile(path.join(target, name), state.contents.get(ino) ?? Buffer.alloc(0));
    }
  }
}

/** The real file system without fsyncs: recovery of a simulated cut needs no durability of its own, only speed. */
export const unsyncedSpoolFs: SpoolFs = {
  ...realSpoolFs,
  open: (async (file: string, flags?: string | number, mode?: number) => {
    const handle = await realSpoolFs.open(file, flags, mode);
    handle.sync = handle.datasync = async () => undefined;
    return handle;
  }) as SpoolFs['open'],
};
