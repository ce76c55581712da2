// Running the *_perf_test programs: finding them, one program at a time in its own process group
// (a timeout takes its kernel-model and device tasks down too), collecting the results it prints,
// and a status line on stderr while it runs.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { writeFdSync } from '../kselftest';
import { killGroup } from '../run_kselftest';
import { BENCH_LINE, CaseResult, format_value, PROGRESS_LINE } from '../kvm/lib/perf';

/** Programs run in this order; any other *_perf_test follows by name. */
const ORDER = ['dispatch_perf_test', 'ioregionfd_vcpus_perf_test'];

/** The *_perf_test programs next to the kvm selftests, in ORDER. */
export function discoverPerfTests(dir: string): { name: string; file: string }[] {
  let files: string[];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('_perf_test.js'));
  } catch {
    files = [];
  }
  const rank = (n: string) => (ORDER.includes(n) ? ORDER.indexOf(n) : ORDER.length);
  return files
    .map((f) => ({ name: f.slice(0, -'.js'.length), file: path.join(dir, f) }))
    .sort((a, b) => rank(a.name) - rank(b.name) || (a.name < b.name ? -1 : 1));
}

// ---- status line ----------------------------------------------------------------------------------

const tty = process.stderr.isTTY === true;
let statusShown = false;
/** When this run started. */
export const started = Date.now();

export function elapsed(): string {
  const s = Math.round((Date.now() - started) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

export function status(text: string): void {
  if (!tty) return;
  const width = process.stderr.columns || 100;
  writeFdSync(2, `\r\x1b[K${`[${elapsed()}] ${text}`.slice(0, width - 1)}`);
  statusShown = true;
}

export function clearStatus(): void {
  if (tty && statusShown) writeFdSync(2, '\r\x1b[K');
  statusShown = false;
}

/** A line for the user, above the status line. */
export function say(text: string, fd = 1): void {
  clearStatus();
  writeFdSync(fd, text.endsWith('\n') ? text : `${text}\n`);
}

// ---- running one program ---------------------------------------------------------------------------

export interface ProgramRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  results: CaseResult[];
  output: string[];
  seconds: number;
}

/** The process group of the program running now (killed with the runner). */
export let runningGroup: number | undefined;

export function runProgram(file: string, args: string[], timeoutS: number, label: string, verbose: boolean): Promise<ProgramRun> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    // Own process group: a timeout takes down the program's kernel-model and device tasks too.
    const child = spawn(process.execPath, [file, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, BENCH_PROGRESS: '1', KSFT_TAP_LEVEL: '1' },
    });
    runningGroup = child.pid;
    const run: ProgramRun = { code: null, signal: null, timedOut: false, results: [], output: [], seconds: 0 };
    const onLine = (line: string, fromStderr: boolean) => {
      if (!fromStderr && line.startsWith(PROGRESS_LINE)) {
        const [name, frac] = line.slice(PROGRESS_LINE.length).split(' ');
        status(`${label}: ${name} ${frac.startsWith('0/') ? 'warm-up' : `round ${frac}`}`);
        return;
      }
      if (!fromStderr && line.startsWith(BENCH_LINE)) {
        try {
          const r = JSON.parse(line.slice(BENCH_LINE.length)) as CaseResult;
          run.results.push(r);
          status(`${label}: ${r.name} ${r.skipped ? 'skipped' : format_value(r.median, r.unit)}`);
        } catch {
          run.output.push(line);
        }
        return;
      }
      run.output.push(line);
      if (verbose || fromStderr) say(`  ${line}`, fromStderr ? 2 : 1);
    };
    const pump = (stream: NodeJS.ReadableStream, fromStderr: boolean) => {
      const dec = new StringDecoder('utf8');
      let buf = '';
      stream.on('data', (chunk: Buffer) => {
        buf += dec.write(chunk);
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          onLine(buf.slice(0, nl), fromStderr);
          buf = buf.slice(nl + 1);
        }
      });
      stream.on('end', () => {
        if (buf) onLine(buf, fromStderr);
      });
    };
    pump(child.stdout!, false);
    pump(child.stderr!, true);
    const timer = setTimeout(() => {
      run.timedOut = true;
      if (child.pid) killGroup(child.pid, 'SIGTERM');
      setTimeout(() => child.pid && killGroup(child.pid, 'SIGKILL'), 2000).unref();
    }, timeoutS * 1000);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      runningGroup = undefined;
      resolve(run);
    };
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      // Whatever the program left behind in its group (it should have left nothing) goes too; its
      // kernel-model shares our pipes, so only then do they close.
      if (child.pid) killGroup(child.pid, 'SIGKILL');
      run.code = code;
      run.signal = signal;
      run.seconds = (Date.now() - t0) / 1000;
      setTimeout(finish, 5000).unref();
    });
    // 'close' comes once the pipes are drained: every result line has been seen.
    child.once('close', finish);
  });
}
