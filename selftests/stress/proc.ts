// What the stress campaigns read about processes from /proc: a process's resources (fds, threads,
// mappings, RSS) and which processes carry a campaign's marker.

import * as fs from 'fs';

/** A process's resources at one moment. */
export interface ProcSample {
  fds: number;
  threads: number;
  /** Lines of /proc/PID/maps. */
  mappings: number;
  /** VmRSS in kB. */
  rssKb: number;
}

/** fds, threads, mappings and RSS of `pid` (throws if it is gone). */
export function sampleProcess(pid: number): ProcSample {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return {
    fds: fs.readdirSync(`/proc/${pid}/fd`).length,
    threads: fs.readdirSync(`/proc/${pid}/task`).length,
    mappings: fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter(Boolean).length,
    rssKb: rss ? Number(rss[1]) : 0,
  };
}

/** Whether `pid` is alive (a zombie counts as gone: it holds nothing but its exit status). */
export function processAlive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** pids of the live processes whose environment holds `marker` (e.g. 'STRESS_ROUND=1234-7'). */
export function processesMarked(marker: string): number[] {
  const found: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    let env: string;
    try {
      env = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
    } catch {
      continue;
    }
    if (env.split('\0').includes(marker) && processAlive(pid)) found.push(pid);
  }
  return found;
}

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `read` until it returns `target` or stops changing for `stableMs`, at most `boundMs`; its last value. */
export async function settled(read: () => number, target: number, stableMs = 200, boundMs = 5000): Promise<number> {
  let n = read();
  for (let waited = 0, stable = 0; n !== target && stable < stableMs && waited < boundMs; waited += 20) {
    await sleep(20);
    const m = read();
    stable = m === n ? stable + 20 : 0;
    n = m;
  }
  return n;
}
