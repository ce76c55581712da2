// The kselftest_harness.h style of writing a test program: one function per test (TEST), fixtures
// with setup and teardown (FIXTURE, TEST_F), EXPECT_* that record a failure and go on, ASSERT_* that
// end the test, SKIP, and test_harness_run(), which counts the plan, runs every test in order and
// prints KTAP with the harness's RUN / OK / FAIL lines. TEST_STEPS turns a scenario (one guest going
// through its stages, the host checking each) into one standalone test per step.
//
// Tests run in this process, one after another (the kernel forks one child per test). A TEST_ASSERT
// of the selftest library inside a test ends that test only, as it ends the kernel's child; a
// TEST_REQUIRE skips it. Options: -l lists the tests, -t NAME runs only those named (repeatable).

import {
  KSFT_FAIL, KSFT_PASS, KSFT_SKIP, ksft_print_cnts, ksft_print_header, ksft_print_msg, ksft_set_plan, ksft_test_result_code,
  ksft_test_result_fail, ksft_test_result_pass, writeFdSync,
} from './kselftest';
import { errnoName } from '../proto/errno';
import { callerLocation, formatScalar, scalarsEqual, setAssertionHook } from './kvm/lib/test_util';

/** A fixture: what each of its tests gets (setup's result), and how it is released afterwards. */
export interface Fixture<T> {
  readonly name: string;
  setup(): T | Promise<T>;
  teardown?(self: T): void | Promise<void>;
}

interface Registered {
  fixture: string;
  name: string;
  body: () => Promise<void>;
}

const registered: Registered[] = [];

/** The test running now: whether an EXPECT failed in it. */
let current: { failed: boolean } | undefined;

/** Ends a test: an ASSERT_* (or a library TEST_ASSERT) failed in it. */
class TestAbort extends Error {}

/** Ends a test as skipped. */
class TestSkip extends Error {}

/** FIXTURE(name, setup, teardown): define a fixture for TEST_F. */
export function FIXTURE<T>(name: string, setup: () => T | Promise<T>, teardown?: (self: T) => void | Promise<void>): Fixture<T> {
  return { name, setup, teardown };
}

/** TEST(name) { ... }: a test without a fixture (reported as global.name). */
export function TEST(name: string, fn: () => void | Promise<void>): void {
  registered.push({ fixture: 'global', name, body: async () => fn() });
}

/** TEST_F(fixture, name) { ... }: setup, the test with setup's result, then teardown (always). */
export function TEST_F<T>(fixture: Fixture<T>, name: string, fn: (self: T) => void | Promise<void>): void {
  registered.push({
    fixture: fixture.name,
    name,
    body: async () => {
      const self = await fixture.setup();
      try {
        await fn(self);
      } finally {
        await fixture.teardown?.(self);
      }
    },
  });
}

/**
 * One step of a scenario: its test name, and what it does and checks with the fixture's state. It checks
 * with EXPECT_* / ASSERT_*, or returns whether it held (false fails it, like a failed EXPECT).
 */
export type Step<T> = readonly [name: string, run: (self: T) => boolean | void | Promise<boolean | void>];

/** Steps replayed as preconditions print nothing but their failures. */
let replaying = false;

async function runStep<T>([name, run]: Step<T>, self: T): Promise<void> {
  const held = await run(self);
  if (held === false && !inTest('TEST_STEPS').failed) EXPECT(false, `"${name}" to hold`);
}

/**
 * TEST_STEPS(fixture, steps): one test per step of a scenario. Test k sets the fixture up, replays steps
 * 0..k-1 as its preconditions (quietly; a failure there ends it as failed, naming the step), runs step
 * k, and tears down. So every test stands alone (-t runs just it), at the price of the replay.
 */
export function TEST_STEPS<T>(fixture: Fixture<T>, steps: readonly Step<T>[]): void {
  steps.forEach((step, k) => TEST_F(fixture, step[0], async (self) => {
    for (const before of steps.slice(0, k)) {
      replaying = true;
      try {
        await runStep(before, self);
      } finally {
        replaying = false;
      }
      ASSERT(!inTest('TEST_STEPS').failed, `precondition "${before[0]}" to hold`);
    }
    await runStep(step, self);
  }));
}

/** TH_LOG: a diagnostic line of the running test. */
export function TH_LOG(text: string): void {
  if (!replaying) ksft_print_msg(text);
}

function report(fn: (...args: never[]) => unknown, text: string): void {
  const at = callerLocation(fn);
  ksft_print_msg(`${at ? `${at.file}:${at.line}: ` : ''}${text}`);
}

function inTest(what: string): { failed: boolean } {
  if (!current) throw new Error(`${what} outside a TEST`);
  return current;
}

/** EXPECT_TRUE: record a failure unless `cond` holds; the test goes on. Returns cond. */
export function EXPECT(cond: unknown, what: string): boolean {
  if (cond) return true;
  inTest('EXPECT').failed = true;
  report(EXPECT, `Expected ${what}`);
  return false;
}

/** ASSERT_TRUE: end the test as failed unless `cond` holds. */
export function ASSERT(cond: unknown, what: string): asserts cond {
  if (cond) return;
  inTest('ASSERT').failed = true;
  report(ASSERT, `Expected ${what}`);
  throw new TestAbort(what);
}

type Scalar = bigint | number | string | boolean;

/** EXPECT_EQ(seen, expected): the values print in hex (integers) or quoted (strings). */
export function EXPECT_EQ(seen: Scalar, expected: Scalar, what = ''): boolean {
  if (scalarsEqual(seen, expected)) return true;
  inTest('EXPECT_EQ').failed = true;
  report(EXPECT_EQ, `Expected ${formatScalar(expected)} == ${formatScalar(seen)}${what ? ` (${what})` : ''}`);
  return false;
}

/** ASSERT_EQ(seen, expected): end the test unless equal. */
export function ASSERT_EQ(seen: Scalar, expected: Scalar, what = ''): void {
  if (scalarsEqual(seen, expected)) return;
  inTest('ASSERT_EQ').failed = true;
  report(ASSERT_EQ, `Expected ${formatScalar(expected)} == ${formatScalar(seen)}${what ? ` (${what})` : ''}`);
  throw new TestAbort(what);
}

/** An ioctl's outcome: success (errno 0, any ret >= 0) or ret -1 with exactly `errno`. */
export function EXPECT_ERRNO(r: { ret: number; errno: number; detail?: string }, errno: number, what = ''): boolean {
  const ok = errno === 0 ? r.ret >= 0 : r.ret === -1 && r.errno === errno;
  if (ok) return true;
  inTest('EXPECT_ERRNO').failed = true;
  const got = r.ret >= 0 ? `success (ret ${r.ret})` : `${errnoName(r.errno)}${r.detail ? ` (${r.detail})` : ''}`;
  report(EXPECT_ERRNO, `Expected ${errno === 0 ? 'success' : errnoName(errno)}, got ${got}${what ? `: ${what}` : ''}`);
  return false;
}

/** SKIP(reason): end the test as skipped (a missing platform feature). */
export function SKIP(reason: string): never {
  throw new TestSkip(reason);
}

function parseArgs(argv: string[]): { list: boolean; only: string[] } {
  const o = { list: false, only: [] as string[] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '-l') o.list = true;
    else if (argv[i] === '-t' && i + 1 < argv.length) o.only.push(argv[++i]);
    else {
      writeFdSync(2, `usage: ${process.argv[1]} [-l] [-t TEST]...\n`);
      process.exit(KSFT_FAIL);
    }
  }
  return o;
}

/**
 * Run every registered test (or those -t names) in order and exit: KSFT_PASS when none failed,
 * KSFT_SKIP when every test skipped, KSFT_FAIL otherwise.
 */
export async function test_harness_run(argv = process.argv.slice(2)): Promise<never> {
  const opts = parseArgs(argv);
  const full = (t: Registered) => `${t.fixture}.${t.name}`;
  if (opts.list) {
    for (const t of registered) writeFdSync(1, `${full(t)}\n`);
    process.exit(KSFT_PASS);
  }
  const selected = opts.only.length ? registered.filter((t) => opts.only.includes(t.name) || opts.only.includes(full(t))) : registered;
  ksft_print_header();
  ksft_set_plan(selected.length);
  const fixtures = new Set(selected.map((t) => t.fixture)).size;
  TH_LOG(`Starting ${selected.length} tests from ${fixtures} test cases.`);
  let passed = 0;
  let skipped = 0;
  for (const t of selected) {
    const name = full(t);
    TH_LOG(` RUN           ${name} ...`);
    const state = { failed: false };
    current = state;
    let skip: string | undefined;
    setAssertionHook({
      // The library's TEST_ASSERT printed its banner: end this test, not the program.
      fail: () => {
        state.failed = true;
        throw new TestAbort('TEST_ASSERT');
      },
      skip: (reason) => {
        throw new TestSkip(reason);
      },
    });
    try {
      await t.body();
    } catch (e) {
      if (e instanceof TestSkip) skip = e.message;
      else if (!(e instanceof TestAbort)) {
        state.failed = true;
        TH_LOG(`unexpected exception: ${(e as Error)?.stack ?? String(e)}`);
      }
    } finally {
      setAssertionHook(undefined);
      current = undefined;
    }
    if (state.failed) {
      TH_LOG(`         FAIL  ${name}`);
      ksft_test_result_fail(name);
    } else if (skip !== undefined) {
      TH_LOG(`      SKIP      ${skip}`);
      skipped++;
      passed++;
      ksft_test_result_code(KSFT_SKIP, name, skip);
    } else {
      TH_LOG(`           OK  ${name}`);
      passed++;
      ksft_test_result_pass(name);
    }
  }
  TH_LOG(`${passed === selected.length ? 'PASSED' : 'FAILED'}: ${passed} / ${selected.length} tests passed.`);
  ksft_print_cnts();
  process.exit(passed !== selected.length ? KSFT_FAIL : skipped === selected.length && skipped > 0 ? KSFT_SKIP : KSFT_PASS);
}
