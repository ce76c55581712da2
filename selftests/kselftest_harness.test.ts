// Checks the kselftest_harness layer by running small programs built on it (the compiled harness in
// dist/): the plan it counts, the RUN / OK / FAIL lines, EXPECT going on and ASSERT ending a test,
// a library TEST_ASSERT or TEST_REQUIRE ending only its test, fixture setup and teardown around each
// test, -l and -t, and the exit codes.

import test from 'ava';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const REPO = path.resolve(__dirname, '..');
const HARNESS = path.join(REPO, 'dist', 'selftests', 'kselftest_harness.js');
const TEST_UTIL = path.join(REPO, 'dist', 'selftests', 'kvm', 'lib', 'test_util.js');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'kselftest-harness-test-'));
test.after.always(() => fs.rmSync(TMP, { recursive: true, force: true }));

let count = 0;

function run(body: string, args: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const file = path.join(TMP, `prog${++count}.js`);
  fs.writeFileSync(file, [
    `const h = require(${JSON.stringify(HARNESS)});`,
    `const u = require(${JSON.stringify(TEST_UTIL)});`,
    body,
    'void h.test_harness_run();',
  ].join('\n'));
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.KSFT_TAP_LEVEL;
    const child = spawn(process.execPath, [file, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('the plan is counted, each test gets RUN and OK lines, and all passing exits 0', async (t) => {
  const r = await run(`
h.TEST('first', () => {});
for (const n of [1, 2]) h.TEST('row ' + n, () => { h.EXPECT_EQ(n * 2, n + n); });
`);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, [
    'TAP version 13',
    '1..3',
    '# Starting 3 tests from 1 test cases.',
    '#  RUN           global.first ...',
    '#            OK  global.first',
    'ok 1 global.first',
    '#  RUN           global.row 1 ...',
    '#            OK  global.row 1',
    'ok 2 global.row 1',
    '#  RUN           global.row 2 ...',
    '#            OK  global.row 2',
    'ok 3 global.row 2',
    '# PASSED: 3 / 3 tests passed.',
    '# Totals: pass:3 fail:0 xfail:0 xpass:0 skip:0 error:0',
    '',
  ].join('\n'));
});

test('EXPECT records a failure and the test goes on; ASSERT ends it; the next test still runs; exit 1', async (t) => {
  const r = await run(`
h.TEST('expects', () => { h.EXPECT(false, 'first'); h.EXPECT_EQ(1n, 2, 'second'); console.log('# after the expects'); });
h.TEST('asserts', () => { h.ASSERT(false, 'stop here'); console.log('# never'); });
h.TEST('errno', () => { h.EXPECT_ERRNO({ ret: -1, errno: 17, detail: 'overlap' }, 22); });
h.TEST('last', () => {});
`);
  t.is(r.code, 1);
  t.regex(r.stdout, /# \/.*prog\d+\.js:4: Expected first\n/);
  t.regex(r.stdout, /Expected 0x2 == 0x1 \(second\)\n# after the expects\n#          FAIL  global\.expects\nnot ok 1 global\.expects\n/);
  t.notRegex(r.stdout, /# never/);
  t.regex(r.stdout, /Expected stop here\n#          FAIL  global\.asserts\nnot ok 2 global\.asserts/);
  t.regex(r.stdout, /Expected EINVAL, got EEXIST \(overlap\)\n#          FAIL  global\.errno\nnot ok 3 global\.errno/);
  t.regex(r.stdout, /ok 4 global\.last\n# FAILED: 1 \/ 4 tests passed\.\n# Totals: pass:1 fail:3 /);
});

test('a library TEST_ASSERT ends only its test (banner on stderr); TEST_REQUIRE skips it', async (t) => {
  const r = await run(`
h.TEST('library assert', () => { u.TEST_ASSERT(1 === 2, 'values differ'); });
h.TEST('requirement', () => { u.__TEST_REQUIRE(false, 'no such feature here'); });
h.TEST('after', () => {});
`);
  t.is(r.code, 1);
  t.regex(r.stderr, /==== Test Assertion Failure ====[\s\S]*values differ/);
  t.regex(r.stdout, /not ok 1 global\.library assert\n/);
  t.regex(r.stdout, /ok 2 global\.requirement # SKIP - no such feature here\n/);
  t.regex(r.stdout, /ok 3 global\.after\n/);
  t.regex(r.stdout, /# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0/);
});

test('a fixture is set up before and torn down after each of its tests, also a failing one', async (t) => {
  const r = await run(`
const log = [];
const f = h.FIXTURE('vm', () => { log.push('setup'); return { n: log.length }; }, (self) => { log.push('teardown ' + self.n); console.log('# ' + log.join(',')); });
h.TEST_F(f, 'one', (self) => { h.EXPECT_EQ(self.n, 1); });
h.TEST_F(f, 'two', async (self) => { await new Promise((r) => setTimeout(r, 5)); h.ASSERT(self.n === 99, 'fails'); });
`);
  t.is(r.code, 1);
  t.regex(r.stdout, /# Starting 2 tests from 1 test cases\./);
  t.regex(r.stdout, /# setup,teardown 1\n#            OK  vm\.one\nok 1 vm\.one/);
  t.regex(r.stdout, /# setup,teardown 1,setup,teardown 3\n#          FAIL  vm\.two\nnot ok 2 vm\.two/);
});

test('an exception is a failure with its stack; every test skipped exits 4', async (t) => {
  const thrown = await run('h.TEST(\'throws\', () => { throw new Error(\'boom\'); });');
  t.is(thrown.code, 1);
  t.regex(thrown.stdout, /unexpected exception: Error: boom/);
  const skipped = await run('h.TEST(\'a\', () => h.SKIP(\'not here\')); h.TEST(\'b\', () => h.SKIP(\'nor here\'));');
  t.is(skipped.code, 4);
  t.regex(skipped.stdout, /ok 1 global\.a # SKIP not here\n[^]*ok 2 global\.b # SKIP nor here/);
});

test('-l lists the tests without running them; -t runs only the named ones', async (t) => {
  const body = 'h.TEST(\'a\', () => console.log(\'# ran a\')); h.TEST(\'b\', () => console.log(\'# ran b\'));';
  const list = await run(body, ['-l']);
  t.is(list.code, 0);
  t.is(list.stdout, 'global.a\nglobal.b\n');
  const only = await run(body, ['-t', 'b']);
  t.is(only.code, 0);
  t.regex(only.stdout, /1\.\.1\n/);
  t.notRegex(only.stdout, /ran a/);
  t.regex(only.stdout, /ok 1 global\.b/);
});

test('TEST_STEPS: one test per step, each replaying the steps before it on a fresh fixture, quietly', async (t) => {
  const body = `
const f = h.FIXTURE('seq', () => ({ stage: 0 }), () => console.log('# teardown'));
h.TEST_STEPS(f, [
  ['first', (s) => { s.stage++; h.TH_LOG('at ' + s.stage); }],
  ['second', (s) => ++s.stage === 2],
  ['third', (s) => { h.EXPECT_EQ(++s.stage, 3); return false; }],
  ['fourth', () => true],
]);
`;
  const r = await run(body);
  t.is(r.code, 1);
  t.regex(r.stdout, /1\.\.4\n/);
  t.regex(r.stdout, /RUN {11}seq\.first \.\.\.\n# at 1\n# teardown\n/);
  t.regex(r.stdout, /RUN {11}seq\.second \.\.\.\n# teardown\n#            OK  seq\.second\n/, 'the replayed first step logs nothing');
  t.regex(r.stdout, /Expected "third" to hold\n# teardown\n#          FAIL  seq\.third\n/);
  t.regex(r.stdout, /Expected precondition "third" to hold\n# teardown\n#          FAIL  seq\.fourth\n/);
  const only = await run(body, ['-t', 'second']);
  t.is(only.code, 0);
  t.regex(only.stdout, /1\.\.1\n[^]*ok 1 seq\.second\n/);
});
