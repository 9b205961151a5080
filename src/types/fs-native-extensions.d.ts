declare module 'fs-native-extensions' {
  /** Takes an exclusive (or shared) lock on the whole file without waiting; false when another holder has it. */
  export function tryLock(fd: number, options?: { shared?: boolean }): boolean;
  export function unlock(fd: number): void;
}
