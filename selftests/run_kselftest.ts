// The kselftest runner (run_kselftest.sh + kselftest/runner.sh): runs each compiled kvm selftest with a timeout in its own process group and reports TAP 13.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { writeFdSync } from './kselftest';

/** The one collection this tree has. */
const COLLECTION = 'kvm';
/** runner.sh's default per-test timeout, in seconds. */
export const DEFAULT_TIMEOUT_S = 45;
/** How long a timed-out test gets between SIGTERM and SIGKILL. */
const KILL_GRACE_MS = 2000;
/** How long output may stay open after the test process exited (a grandchild holding the pipe). */
const OUTPUT_DRAIN_MS = 5000;

/** Exit code for a command line the runner cannot act on. */
const EXIT_USAGE = 2;

/** One test program of the collection. */
export interface SelftestProgram {
  /** File basename without `.js`, e.g. `ioregionfd_test`. */
  name: string;
  /** Absolute path of the compiled program. */
  file: string;
}

/** The parsed command line. */
export interface RunnerOptions {
  tests: string[];
  skips: string[];
  collection?: string;
  list: boolean;
  overrideTimeout?: number;
  noErrorOnFail: boolean;
  dir?: string;
  help: boolean;
}

/** How one test ended. */
export interface TestOutcome {
  kind: 'pass' | 'skip' | 'fail' | 'timeout';
  /** Exit status as a shell reports it: the exit code, or 128+signo after a signal. */
  rc: number;
}

/** A bad command line: the message goes to stderr with the usage text, exit 2 (shared with run_bench). */
export class UsageError extends Error {}

const USAGE = `Usage: node dist/selftests/run_kselftest.js [options]
Runs the kvm selftests (TAP 13 on stdout).

  -t, --test [kvm:]NAME          run only this test (repeatable)
  -S, --skip [kvm:]NAME          do not run this test (repeatable)
  -c, --collection kvm           run only this collection
  -l, --list                     list the tests as kvm:NAME and exit
  -o, --override-timeout SECS    per-test timeout, overriding the settings file (0: none)
  -f, --no-error-on-fail         exit 0 even if a test failed
      --dir DIR                  take the test programs from DIR (settings: DIR/settings)
  -h, --help                     this text
`;

/** Parse run_kselftest's command line; throws a UsageError on anything it does not know. */
export function parseArgs(argv: readonly string[]): RunnerOptions {
  const opts: RunnerOptions = { tests: [], skips: [], list: false, noErrorOnFail: false, help: false };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let inline: string | undefined;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    if (eq > 0) {
      inline = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const value = (): string => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) throw new UsageError(`option ${arg} needs a value`);
      return argv[++i];
    };
    const flag = (): void => {
      if (inline !== undefined) throw new UsageError(`option ${arg} takes no value`);
    };
    switch (arg) {
      case '-t': case '--test': opts.tests.push(value()); break;
      case '-S': case '--skip': opts.skips.push(value()); break;
      case '-c': case '--collection': opts.collection = value(); break;
      case '-l': case '--list': flag(); opts.list = true; break;
      case '-f': case '--no-error-on-fail': flag(); opts.noErrorOnFail = true; break;
      case '-h': case '--help': flag(); opts.help = true; break;
      case '--dir': opts.dir = value(); break;
      case '-o': case '--override-timeout': {
        const text = value();
        if (!/^\d+$/.test(text)) throw new UsageError(`timeout must be a whole number of seconds, got '${text}'`);
        opts.overrideTimeout = Number(text);
        break;
      }
      default:
        throw new UsageError(arg.startsWith('-') ? `unknown option '${arg}'` : `unexpected argument '${arg}'`);
    }
  }
  return opts;
}

/**
 * The test programs under `dir`: every `*_test.js` in it or its subfolders, sorted by name,
 * leaving out benchmarks (`*_perf_test.js`) and the library (`lib/`).
 */
export function discoverTests(dir: string): SelftestProgram[] {
  const found: SelftestProgram[] = [];
  const walk = (d: string, top: boolean): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const full = path.join(d, e.name);
      if (e.isDirectory()) {
        if (top && e.name === 'lib') continue;
        if (e.name.startsWith('.') || e.name === 'node_modules') continue;
        walk(full, false);
      } else if (e.isFile() && e.name.endsWith('_test.js') && !e.name.endsWith('_perf_test.js')) {
        found.push({ name: e.name.slice(0, -'.js'.length), file: full });
      }
    }
  };
  walk(dir, true);
  return found.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.file < b.file ? -1 : 1));
}

/** The `timeout=N` of a kselftest settings file, or undefined if the file or the key is absent. */
export function readSettingsTimeout(settingsFile: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(settingsFile, 'utf8');
  } catch {
    return undefined;
  }
  let timeout: number | undefined;
  for (const raw of text.split('\n')) {
    const lineText = raw.trim();
    if (lineText === '' || lineText.startsWith('#')) continue;
    const eq = lineText.indexOf('=');
    if (eq < 0) continue;
    const key = lineText.slice(0, eq).trim();
    const value = lineText.slice(eq + 1).trim();
    // Later lines win, as with the shell's repeated assignments.
    if (key === 'timeout' && /^\d+$/.test(value)) timeout = Number(value);
  }
  return timeout;
}

/** The `ok`/`not ok` line for test number `n`. */
export function resultLine(n: number, name: string, outcome: TestOutcome, timeoutS: number): string {
  const what = `selftests: ${COLLECTION}: ${name}`;
  switch (outcome.kind) {
    case 'pass': return `ok ${n} ${what}`;
    case 'skip': return `ok ${n} ${what} # SKIP`;
    case 'timeout': return `not ok ${n} ${what} # TIMEOUT ${timeoutS} seconds`;
    case 'fail': return `not ok ${n} ${what} # exit=${outcome.rc}`;
  }
}

function out(text: string): void {
  writeFdSync(1, text);
}

/** Send `signal` to every process of the group led by `pgid`; a group that is already gone is fine. */
export function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: nobody left in the group.
  }
}

/** The group of the test running now, so a signal to the runner can take it down too. */
let runningGroup: number | undefined;

/**
 * Run one program in its own process group with `timeoutS` (0: none), streaming its merged
 * stdout+stderr as `# ` lines. Whatever is left of the group when it is done gets SIGKILL.
 */
export function runTest(file: string, timeoutS: number): Promise<TestOutcome> {
  return new Promise((resolve) => {
    // `exec ... 2>&1` in a shell merges stderr into stdout on one pipe, exactly like runner.sh,
    // so the order of the two streams survives; the shell then becomes the node process itself.
    const child = spawn('/bin/sh', ['-c', 'exec "$0" "$@" 2>&1', process.execPath, file], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const pgid = child.pid;
    let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let spawnFailed = false;
    let timedOut = false;
    let openStreams = 2;
    const timers: NodeJS.Timeout[] = [];
    let timeoutTimer: NodeJS.Timeout | undefined;
    const decoder = new StringDecoder('utf8');
    let partial = '';

    const emit = (chunk: string): void => {
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      if (lines.length > 0) out(lines.map((l) => `# ${l}\n`).join(''));
    };

    let settled = false;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      partial += decoder.end();
      if (partial !== '') out(`# ${partial}\n`);
      partial = '';
      if (pgid !== undefined) killGroup(pgid, 'SIGKILL');
      child.stdout?.destroy();
      child.stderr?.destroy();
      if (runningGroup === pgid) runningGroup = undefined;
      if (timedOut) return resolve({ kind: 'timeout', rc: 124 });
      let rc: number;
      if (spawnFailed || !exited) rc = 255;
      else if (exited.code !== null) rc = exited.code;
      else rc = 128 + (exited.signal ? os.constants.signals[exited.signal] ?? 0 : 0);
      resolve({ kind: rc === 0 ? 'pass' : rc === 4 ? 'skip' : 'fail', rc });
    };
    const maybeFinish = (): void => {
      if ((exited || spawnFailed) && openStreams === 0) finish();
    };

    child.on('error', (err) => {
      out(`# run_kselftest: cannot run ${file}: ${err.message}\n`);
      spawnFailed = true;
      maybeFinish();
    });
    if (pgid === undefined) {
      // Nothing started, so no output will come; the 'error' event above ends the test.
      openStreams = 0;
      return;
    }
    runningGroup = pgid;

    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) {
        openStreams--;
        continue;
      }
      stream.on('data', (chunk: Buffer) => emit(decoder.write(chunk)));
      stream.once('close', () => {
        openStreams--;
        maybeFinish();
      });
      stream.on('error', () => undefined);
    }
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      // The test itself is over: its exit status, not a later timeout, is the result.
      if (!timedOut && timeoutTimer) clearTimeout(timeoutTimer);
      // A grandchild that inherited the pipe can keep it open forever; give it a moment, then end it.
      timers.push(setTimeout(() => {
        killGroup(pgid, 'SIGKILL');
        finish();
      }, OUTPUT_DRAIN_MS));
      maybeFinish();
    });

    if (timeoutS > 0) {
      timeoutTimer = setTimeout(() => {
        timedOut = true;
        killGroup(pgid, 'SIGTERM');
        timers.push(setTimeout(() => killGroup(pgid, 'SIGKILL'), KILL_GRACE_MS));
      }, timeoutS * 1000);
      timers.push(timeoutTimer);
    }
  });
}

/** Run the selected tests and print the TAP report; resolves to the runner's exit code. */
export async function runSelftests(argv: readonly string[]): Promise<number> {
  let opts: RunnerOptions;
  try {
    opts = parseArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    writeFdSync(2, `run_kselftest: ${err.message}\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (opts.help) {
    out(USAGE);
    return 0;
  }
  if (opts.collection !== undefined && opts.collection !== COLLECTION) {
    writeFdSync(2, `run_kselftest: unknown collection '${opts.collection}' (there is only '${COLLECTION}')\n`);
    return EXIT_USAGE;
  }

  // Compiled, this file is <repo>/dist/selftests/run_kselftest.js; the settings file is a source
  // file and is not copied by tsc, so it is read from <repo>/selftests/kvm.
  // Run from the sources (ts-node), the runner still runs the built programs in dist/.
  const compiled = path.basename(path.dirname(__dirname)) === 'dist';
  const repo = compiled ? path.resolve(__dirname, '..', '..') : path.resolve(__dirname, '..');
  const testDir = opts.dir !== undefined ? path.resolve(opts.dir) : path.join(repo, 'dist', 'selftests', COLLECTION);
  const settingsFile = opts.dir !== undefined ? path.join(testDir, 'settings') : path.join(repo, 'selftests', COLLECTION, 'settings');

  const all = discoverTests(testDir);
  if (all.length === 0) {
    // A run of nothing must not look like a pass.
    writeFdSync(2, `run_kselftest: no compiled *_test.js programs in ${testDir}${opts.dir === undefined ? ' (run `npm run build` first)' : ''}\n`);
    return EXIT_USAGE;
  }
  if (opts.list) {
    out(all.map((t) => `${COLLECTION}:${t.name}\n`).join(''));
    return 0;
  }

  const bare = (spec: string): string | undefined => {
    const colon = spec.indexOf(':');
    if (colon < 0) return spec;
    return spec.slice(0, colon) === COLLECTION ? spec.slice(colon + 1) : undefined;
  };
  let selected = all;
  if (opts.tests.length > 0) {
    const wanted = new Set<string>();
    for (const spec of opts.tests) {
      const name = bare(spec);
      if (name === undefined || !all.some((t) => t.name === name)) {
        writeFdSync(2, `run_kselftest: no test named '${spec}' in ${testDir}\n`);
        return EXIT_USAGE;
      }
      wanted.add(name);
    }
    selected = all.filter((t) => wanted.has(t.name));
  }
  for (const spec of opts.skips) {
    const name = bare(spec);
    if (name !== undefined && !all.some((t) => t.name === name)) {
      writeFdSync(2, `run_kselftest: -S ${spec}: no test of that name in ${testDir}\n`);
      return EXIT_USAGE;
    }
  }
  const skipped = new Set(opts.skips.map(bare).filter((n): n is string => n !== undefined));
  selected = selected.filter((t) => !skipped.has(t.name));

  out(`TAP version 13\n1..${selected.length}\n`);
  const totals = { pass: 0, fail: 0, skip: 0 };
  for (const [i, test] of selected.entries()) {
    // Read per test, as runner.sh does, so an edit between tests takes effect.
    let timeoutS = readSettingsTimeout(settingsFile) ?? DEFAULT_TIMEOUT_S;
    if (opts.overrideTimeout !== undefined) {
      timeoutS = opts.overrideTimeout;
      out(`# overriding timeout to ${timeoutS}\n`);
    } else {
      out(`# timeout set to ${timeoutS}\n`);
    }
    out(`# selftests: ${COLLECTION}: ${test.name}\n`);
    const outcome = await runTest(test.file, timeoutS);
    out(`${resultLine(i + 1, test.name, outcome, timeoutS)}\n`);
    if (outcome.kind === 'pass') totals.pass++;
    else if (outcome.kind === 'skip') totals.skip++;
    else totals.fail++;
  }
  out(`# Totals: pass:${totals.pass} fail:${totals.fail} xfail:0 xpass:0 skip:${totals.skip} error:0\n`);
  return totals.fail > 0 && !opts.noErrorOnFail ? 1 : 0;
}

if (require.main === module) {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      // Never leave a test's kernel-model or device processes behind us.
      if (runningGroup !== undefined) killGroup(runningGroup, 'SIGKILL');
      process.exit(128 + os.constants.signals[signal]);
    });
  }
  runSelftests(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      writeFdSync(2, `run_kselftest: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
