/** The file-system calls the spool makes; tests replace one to force a failure on the durable path. */
import * as fsp from 'node:fs/promises';

export interface SpoolFs {
  open: typeof fsp.open;
  rename: typeof fsp.rename;
  link: typeof fsp.link;
  unlink: typeof fsp.unlink;
  readdir: typeof fsp.readdir;
  readFile: typeof fsp.readFile;
  mkdir: typeof fsp.mkdir;
}

export const realSpoolFs: SpoolFs = {
  open: fsp.open,
  rename: fsp.rename,
  link: fsp.link,
  unlink: fsp.unlink,
  readdir: fsp.readdir,
  readFile: fsp.readFile,
  mkdir: fsp.mkdir,
};
