/**
 * A timer-drift probe for event loop stalls. A 5 ms interval timer fires late by however long the
 * loop was blocked; on a busy shared machine it is also late whenever the OS runs other processes.
 * So each gap is also measured in the CPU time of this process's main thread (the one running the
 * event loop; /proc/self/task/<pid>/stat, 10 ms ticks - GC helpers and the libuv pool excluded),
 * and the stall is the smaller of the two: how long the loop was blocked by work of its own. On an
 * idle machine the two agree.
 */
import { readFileSync } from 'node:fs';

const TICK_MS = 10; // USER_HZ is 100 on Linux (getconf CLK_TCK)
const mainThreadStat = `/proc/self/task/${process.pid}/stat`;

/** CPU time of the main thread in ms (user + system), or of the whole process where /proc is missing. */
function mainThreadCpuMs(): number {
  try {
    // Fields after the command name "(...)": utime and stime are the 12th and 13th.
    const stat = readFileSync(mainThreadStat, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
  } catch {
    const usage = process.cpuUsage();
    return (usage.user + usage.system) / 1000;
  }
}
export interface StallFigures {
  /** The longest the loop was blocked by its own work (ms). */
  worstStallMs: number;
  /** The longest timer gap in wall-clock time, preemption by other processes included (ms). */
  worstWallMs: number;
}

export function startStallProbe(intervalMs = 5): { stop: () => StallFigures } {
  let last = performance.now();
  let lastCpu = mainThreadCpuMs();
  const figures: StallFigures = { worstStallMs: 0, worstWallMs: 0 };
  const sample = () => {
    const now = performance.now();
    const cpu = mainThreadCpuMs();
    const wall = now - last;
    const busy = cpu - lastCpu;
    figures.worstWallMs = Math.max(figures.worstWallMs, wall);
    figures.worstStallMs = Math.max(figures.worstStallMs, Math.min(wall, busy));
    last = now;
    lastCpu = cpu;
  };
  const timer = setInterval(sample, intervalMs);
  return {
    stop: () => {
      clearInterval(timer);
      sample();
      return figures;
    },
  };
}
