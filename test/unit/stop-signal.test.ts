import { describe, expect, it } from 'vitest';
import { REPEATED_STOP_WINDOW_MS, stopSignalAction } from '../../src/cli/stop-signal.js';

describe('stopSignalAction', () => {
  it('stops on the first signal, takes a repeat within the window as the same stop, forces after it', () => {
    expect(stopSignalAction(null, 5_000)).toBe('stop');
    expect(stopSignalAction(5_000, 5_000)).toBe('same-stop');
    expect(stopSignalAction(5_000, 5_000 + REPEATED_STOP_WINDOW_MS - 1)).toBe('same-stop');
    expect(stopSignalAction(5_000, 5_000 + REPEATED_STOP_WINDOW_MS)).toBe('force');
    expect(stopSignalAction(5_000, 60_000)).toBe('force');
  });
});
