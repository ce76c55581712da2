// The kselftest.h reporting API: TAP result lines, pass/fail counters and the exit codes a kselftest runner understands.

import * as fs from 'node:fs';
import { strerror } from '../proto/errno';
import { refuseInGuestContext } from '../proto/guest-cpu';

/** Exit code: every test passed. */
export const KSFT_PASS = 0;
/** Exit code: at least one test failed. */
export const KSFT_FAIL = 1;
/** Exit code: the test failed as expected. */
export const KSFT_XFAIL = 2;
/** Exit code: the test passed although it was expected to fail. */
export const KSFT_XPASS = 3;
/** Exit code: the test could not run here (missing feature, no permission). */
export const KSFT_SKIP = 4;

/** The result counters kept by this module, as printed by ksft_print_cnts(). */
export interface KsftCounts {
  pass: number;
  fail: number;
  xfail: number;
  xpass: number;
  skip: number;
  error: number;
  /** The number announced by ksft_set_plan(), 0 if none. */
  plan: number;
}

const cnt = { pass: 0, fail: 0, xfail: 0, xpass: 0, skip: 0, error: 0 };
let plan = 0;

/**
 * Write all of `text` to a file descriptor synchronously.
 *
 * Synchronous so nothing is lost when process.exit() follows, and so stdout and stderr lines
 * keep their order when a runner merges them.
 */
export function writeFdSync(fd: number, text: string): void {
  let buf = Buffer.from(text, 'utf8');
  while (buf.length > 0) {
    let n: number;
    try {
      n = fs.writeSync(fd, buf);
    } catch (err) {
      // A reader that sets our pipe non-blocking can make a full pipe answer EAGAIN: wait, retry.
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
        continue;
      }
      // The reader is gone (EPIPE): there is nobody left to tell.
      if ((err as NodeJS.ErrnoException).code === 'EPIPE') return;
      throw err;
    }
    buf = buf.subarray(n);
  }
}

/** `text` with exactly one trailing newline, so callers may pass C-style "...\n" or plain text. */
function line(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}

function out(text: string): void {
  writeFdSync(1, text);
}

/** ksft_test_num(): how many results have been reported so far. */
export function ksft_test_num(): number {
  return cnt.pass + cnt.fail + cnt.xfail + cnt.xpass + cnt.skip + cnt.error;
}

/** A snapshot of the counters and the plan. */
export function ksft_counts(): KsftCounts {
  return { ...cnt, plan };
}

/** Print the TAP version line, unless KSFT_TAP_LEVEL says an outer runner already did. */
export function ksft_print_header(): void {
  refuseInGuestContext('ksft_print_header()');
  if (process.env.KSFT_TAP_LEVEL === undefined) out('TAP version 13\n');
}

/** Announce how many results will follow: `1..n`. */
export function ksft_set_plan(n: number): void {
  plan = n;
  out(`1..${n}\n`);
}

/** A diagnostic line: `# text`. Every line of a multi-line text gets the prefix so the TAP stays valid. */
export function ksft_print_msg(text: string): void {
  const body = text.endsWith('\n') ? text.slice(0, -1) : text;
  out(body.split('\n').map((l) => `# ${l}\n`).join(''));
}

/** perror(3) as a diagnostic: `# msg: <strerror> (<errno>)`. */
export function ksft_perror(msg: string, errno: number): void {
  ksft_print_msg(`${msg}: ${strerror(errno)} (${errno})`);
}

/** Report a passing test: `ok N desc`. */
export function ksft_test_result_pass(desc: string): void {
  cnt.pass++;
  out(line(`ok ${ksft_test_num()} ${desc}`));
}

/** Report a failing test: `not ok N desc`. */
export function ksft_test_result_fail(desc: string): void {
  cnt.fail++;
  out(line(`not ok ${ksft_test_num()} ${desc}`));
}

/** Report pass if `cond` holds, fail otherwise. */
export function ksft_test_result(cond: unknown, desc: string): void {
  if (cond) ksft_test_result_pass(desc);
  else ksft_test_result_fail(desc);
}

/** Report a test that could not run here: `ok N # SKIP desc`. */
export function ksft_test_result_skip(desc: string): void {
  cnt.skip++;
  out(line(`ok ${ksft_test_num()} # SKIP ${desc}`));
}

/**
 * ksft_test_result_code(): a named result with a code, as kselftest_harness reports it: `ok N name`,
 * `ok N name # SKIP msg`, `ok N name # XFAIL msg`, or `not ok N name`.
 */
export function ksft_test_result_code(code: number, name: string, msg = ''): void {
  const tail = msg ? ` ${msg}` : '';
  if (code === KSFT_PASS) ksft_test_result_pass(name);
  else if (code === KSFT_SKIP) {
    cnt.skip++;
    out(line(`ok ${ksft_test_num()} ${name} # SKIP${tail}`));
  } else if (code === KSFT_XFAIL) {
    cnt.xfail++;
    out(line(`ok ${ksft_test_num()} ${name} # XFAIL${tail}`));
  } else ksft_test_result_fail(name);
}

/** Report a test that failed as expected: `ok N # XFAIL desc`. */
export function ksft_test_result_xfail(desc: string): void {
  cnt.xfail++;
  out(line(`ok ${ksft_test_num()} # XFAIL ${desc}`));
}

/** Report a test that could not be judged (setup broke): `not ok N # error desc`. */
export function ksft_test_result_error(desc: string): void {
  cnt.error++;
  out(line(`not ok ${ksft_test_num()} # error ${desc}`));
}

/** Print the totals line, preceded by a warning when the plan and the results disagree. */
export function ksft_print_cnts(): void {
  const run = ksft_test_num();
  if (plan !== run) out(`# Planned tests != run tests (${plan} != ${run})\n`);
  out(`# Totals: pass:${cnt.pass} fail:${cnt.fail} xfail:${cnt.xfail} xpass:${cnt.xpass} skip:${cnt.skip} error:${cnt.error}\n`);
}

/** Print the totals and exit KSFT_PASS. */
export function ksft_exit_pass(): never {
  ksft_print_cnts();
  process.exit(KSFT_PASS);
}

/** Print the totals and exit KSFT_FAIL. */
export function ksft_exit_fail(): never {
  ksft_print_cnts();
  process.exit(KSFT_FAIL);
}

/** Exit as pass if `cond` holds, as fail otherwise. */
export function ksft_exit(cond: unknown): never {
  if (cond) ksft_exit_pass();
  ksft_exit_fail();
}

/** Exit as pass iff every planned test passed, was skipped or failed as expected. */
export function ksft_finished(): never {
  ksft_exit(plan === cnt.pass + cnt.xfail + cnt.skip);
}

/** Give up the whole program: `Bail out! text`, the totals, exit KSFT_FAIL. */
export function ksft_exit_fail_msg(text: string): never {
  out(line(`Bail out! ${text}`));
  ksft_print_cnts();
  process.exit(KSFT_FAIL);
}

/** Print the totals and exit KSFT_XFAIL. */
export function ksft_exit_xfail(): never {
  ksft_print_cnts();
  process.exit(KSFT_XFAIL);
}

/** Print the totals and exit KSFT_XPASS. */
export function ksft_exit_xpass(): never {
  ksft_print_cnts();
  process.exit(KSFT_XPASS);
}

/**
 * Skip the rest of the program and exit KSFT_SKIP.
 *
 * Before any plan or result this is the whole output: `1..0 # SKIP text`. Afterwards it reports
 * one more `ok N # SKIP text` line and the totals (printed only if some result was reported),
 * like kselftest.h; that extra line is not added to the counters there either.
 */
export function ksft_exit_skip(text: string): never {
  const run = ksft_test_num();
  if (plan !== 0 || run !== 0) out(line(`ok ${run + 1} # SKIP ${text}`));
  else out(line(`1..0 # SKIP ${text}`));
  if (run !== 0) ksft_print_cnts();
  process.exit(KSFT_SKIP);
}
