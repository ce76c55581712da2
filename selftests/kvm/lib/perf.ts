// The host side of the *_perf_test programs: options, statistics over repetitions, and the result
// lines (KTAP plus one `# BENCH {json}` line per case) that selftests/run_bench.ts collects.
//
// Benchmarks measure, they never assert a time: a case fails only when what it measured was wrong
// (a lost message, a wrong value read back), never because it was slow.

import { EINTR, strerror } from '../../../proto/errno';
import { KVM_EXIT_IO } from '../../../proto/kvm-uapi';
import { ksft_print_msg, ksft_test_result_pass, ksft_test_result_skip, writeFdSync } from '../../kselftest';
import { __vcpu_run, exit_reason, exit_reason_str, KvmVcpu } from './kvm_util';
import { get_ucall, REPORT_GUEST_ASSERT, Ucall, UCALL_ABORT, ucall_name, UCALL_DONE, UCALL_NONE, UCALL_SYNC } from './ucall_common';
import { TEST_ASSERT } from './test_util';

/** Prefix of the machine-readable result line of one case. */
export const BENCH_LINE = '# BENCH ';
/** Prefix of a progress line (only printed when BENCH_PROGRESS=1, for run_bench's status line). */
export const PROGRESS_LINE = '# PROGRESS ';

export type PerfUnit = 'us' | 'ops/s';

/** One measured case, as it appears in run_bench's JSON. */
export interface CaseResult {
  name: string;
  /** 'us' per operation (latencies) or 'ops/s' (rates). */
  unit: PerfUnit;
  /** Median, 10th and 90th percentile of the per-repetition values. */
  median: number;
  p10: number;
  p90: number;
  /** Operations measured, over all repetitions (warm-up excluded). */
  ops: number;
  /** Measured repetitions. */
  runs: number;
  /** The per-repetition values (mean latency or rate of each repetition). */
  samples: number[];
  /** Who held the stopwatch and what it covered. */
  timing: string;
  note?: string;
  /** Set (with a reason) when the case could not run here. */
  skipped?: string;
  /** The program that measured it (filled in by run_bench). */
  program?: string;
}

export interface PerfOptions {
  /** Smoke mode: few operations, few repetitions; the numbers mean little, the paths all run. */
  quick: boolean;
  reps: number;
  /** Multiplies every case's operations per repetition. */
  scale: number;
  /** Run only cases whose name contains one of these. */
  filters: string[];
  progress: boolean;
}

/** Parse a perf test's command line: --quick, --reps N, --scale X, --case SUBSTR (repeatable). */
export function perf_options(argv: readonly string[] = process.argv.slice(2)): PerfOptions {
  const o: PerfOptions = { quick: false, reps: 7, scale: 1, filters: [], progress: process.env.BENCH_PROGRESS === '1' };
  let repsGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      TEST_ASSERT(i + 1 < argv.length, `option ${a} needs a value`);
      return argv[++i];
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--reps') {
      o.reps = Number(value());
      repsGiven = true;
    } else if (a === '--scale') o.scale = Number(value());
    else if (a === '--case') o.filters.push(value());
    else TEST_ASSERT(false, `unknown option '${a}' (known: --quick, --reps N, --scale X, --case NAME)`);
  }
  TEST_ASSERT(Number.isInteger(o.reps) && o.reps >= 1, `--reps must be a positive integer, got ${o.reps}`);
  TEST_ASSERT(o.scale > 0, `--scale must be positive, got ${o.scale}`);
  if (o.quick && !repsGiven) o.reps = 3;
  return o;
}

/** Is this case selected by --case? */
export function perf_selected(o: PerfOptions, name: string): boolean {
  return o.filters.length === 0 || o.filters.some((f) => name.includes(f));
}

/** Operations per repetition for a case: `full` normally, `quick` in --quick mode, times --scale. */
export function perf_ops(o: PerfOptions, full: number, quick = Math.max(20, Math.round(full / 100))): number {
  return Math.max(1, Math.round((o.quick ? quick : full) * o.scale));
}

/** Linear-interpolated percentile (p in 0..100) of unsorted values. */
export function percentile(values: readonly number[], p: number): number {
  TEST_ASSERT(values.length > 0, 'percentile of no values');
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * (p / 100);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/**
 * Summarize repetitions. Each repetition is (operations, elapsed nanoseconds); a latency case reports
 * the mean µs per operation of each repetition, a rate case its operations per second.
 */
export function perf_summarize(name: string, unit: PerfUnit, reps: readonly { ops: number; ns: number }[], timing: string, note?: string): CaseResult {
  const samples = reps.map((r) => (unit === 'us' ? r.ns / 1000 / r.ops : r.ops / (r.ns / 1e9)));
  return {
    name, unit, median: percentile(samples, 50), p10: percentile(samples, 10), p90: percentile(samples, 90),
    ops: reps.reduce((n, r) => n + r.ops, 0), runs: reps.length, samples, timing, ...(note ? { note } : {}),
  };
}

/** Human form of a value in its unit: "17.9 us", "512.3k ops/s". */
export function format_value(v: number, unit: PerfUnit): string {
  if (unit === 'us') return `${v.toFixed(v < 100 ? 2 : 1)} us`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(3)}M ops/s`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k ops/s`;
  return `${v.toFixed(0)} ops/s`;
}

/** Report a measured case: a diagnostic line, `ok N name`, and the BENCH json line. */
export function perf_report(r: CaseResult): void {
  ksft_print_msg(
    `${r.name}: median ${format_value(r.median, r.unit)} (p10 ${format_value(r.p10, r.unit)}, p90 ${format_value(r.p90, r.unit)}), ` +
      `${r.runs} runs, ${r.ops} ops; timed by ${r.timing}${r.note ? `; ${r.note}` : ''}`,
  );
  ksft_test_result_pass(r.name);
  writeFdSync(1, `${BENCH_LINE}${JSON.stringify(r)}\n`);
}

/** Report a case that cannot run here (no compiler, capability missing): `ok N # SKIP`, and a BENCH line saying why. */
export function perf_skip(name: string, unit: PerfUnit, reason: string): void {
  ksft_test_result_skip(`${name}: ${reason}`);
  const r: CaseResult = { name, unit, median: NaN, p10: NaN, p90: NaN, ops: 0, runs: 0, samples: [], timing: '', skipped: reason };
  writeFdSync(1, `${BENCH_LINE}${JSON.stringify(r)}\n`);
}

/** A progress line for run_bench's status display (only when it asked for them). */
export function perf_progress(o: PerfOptions, name: string, done: number, total: number): void {
  if (o.progress) writeFdSync(1, `${PROGRESS_LINE}${name} ${done}/${total}\n`);
}

/**
 * One case of a program, run a round at a time so that a program interleaves the rounds of all its
 * cases: a burst of load on a shared machine then hits every case alike, and ratios between them can
 * be taken round by round.
 */
export interface PerfCase {
  readonly name: string;
  readonly unit: PerfUnit;
  /** Who holds the stopwatch and what it covers. */
  readonly timing: string;
  readonly note?: string;
  /** Run round `round` (0 = the warm-up): how many operations it did and how long they took. */
  round(round: number): { ops: number; ns: number };
  /** After the last round: check what can be checked (counters, clean exits) and release everything. */
  finish(): Promise<void>;
}

/**
 * Run the warm-up round and o.reps measured rounds of every case, round r of all cases before round
 * r+1 of any (starting at a rotating case, so no case always follows the same one), then finish and
 * report each case.
 */
export async function perf_run_interleaved(o: PerfOptions, cases: PerfCase[]): Promise<void> {
  const reps = cases.map((): { ops: number; ns: number }[] => []);
  for (let r = 0; r <= o.reps; r++) {
    for (let k = 0; k < cases.length; k++) {
      const i = (k + r) % cases.length;
      const res = cases[i].round(r);
      if (r > 0) reps[i].push(res);
      perf_progress(o, cases[i].name, r, o.reps);
    }
  }
  for (let i = 0; i < cases.length; i++) {
    const c = cases[i];
    await c.finish();
    perf_report(perf_summarize(c.name, c.unit, reps[i], c.timing, c.note));
  }
}

/** Nanoseconds on the monotonic clock (the same clock in every process and thread of this machine). */
export function now_ns(): bigint {
  return process.hrtime.bigint();
}

// ---- driving self-timing guest code (lib/perf_guest.ts) -----------------------------------------

/** One round a guest reported with GUEST_SYNC_ARGS(round, ops, t0, t1); round 0 is the warm-up. */
export interface GuestRound {
  round: number;
  ops: number;
  t0: bigint;
  t1: bigint;
}

/**
 * The round a ucall reports, or undefined for GUEST_DONE; fails the test on a guest assertion or
 * anything else.
 */
export function guest_round(uc: Ucall): GuestRound | undefined {
  if (uc.cmd === UCALL_DONE) return undefined;
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  TEST_ASSERT(uc.cmd === UCALL_SYNC, `expected a GUEST_SYNC from the perf guest, got ${ucall_name(uc.cmd)}`);
  return { round: Number(uc.args[1]), ops: Number(uc.args[2]), t0: uc.args[3], t1: uc.args[4] };
}

/**
 * Run a vCPU until its next round report: the round, or undefined at GUEST_DONE. Exits other than
 * ucalls go to `onExit`, which completes them and returns true, or returns false for "unexpected".
 */
export function perf_guest_next(vcpu: KvmVcpu, onExit?: (vcpu: KvmVcpu) => boolean): GuestRound | undefined {
  for (;;) {
    const r = __vcpu_run(vcpu);
    if (r.ret !== 0) {
      TEST_ASSERT(r.errno === EINTR, `KVM_RUN failed, errno ${r.errno} (${strerror(r.errno)}): ${r.detail}`, r.errno);
      continue;
    }
    const reason = exit_reason(vcpu);
    if (reason === KVM_EXIT_IO) {
      const uc = get_ucall(vcpu);
      if (uc.cmd !== UCALL_NONE) return guest_round(uc);
    }
    if (onExit?.(vcpu)) continue;
    TEST_ASSERT(false, `unexpected exit ${exit_reason_str(reason)} from the perf guest${r.detail ? `: ${r.detail}` : ''}`);
  }
}
