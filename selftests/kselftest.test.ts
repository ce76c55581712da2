// Checks the exact lines and exit codes of kselftest.ts and test_util.ts by running small throwaway programs that use them.

import test from 'ava';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';
import { sourceLocation } from './kvm/lib/test_util';

const REPO = path.resolve(__dirname, '..');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'kselftest-test-'));
test.after.always(() => fs.rmSync(TMP, { recursive: true, force: true }));

// Fixtures are plain .js programs. They load a copy of the modules transpiled once here, which
// starts a process far faster than loading ts-node in each of them.
const MODULES = path.join(TMP, 'modules');
for (const rel of ['selftests/kselftest.ts', 'selftests/kvm/lib/test_util.ts', 'proto/errno.ts', 'proto/guest-cpu.ts']) {
  const out = ts.transpileModule(fs.readFileSync(path.join(REPO, rel), 'utf8'), {
    fileName: rel,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  });
  fs.mkdirSync(path.dirname(path.join(MODULES, rel)), { recursive: true });
  fs.writeFileSync(path.join(MODULES, rel.replace(/\.ts$/, '.js')), out.outputText);
}

const PREAMBLE = [
  `const k = require(${JSON.stringify(path.join(MODULES, 'selftests', 'kselftest.js'))});`,
  `const u = require(${JSON.stringify(path.join(MODULES, 'selftests', 'kvm', 'lib', 'test_util.js'))});`,
  'const { TEST_ASSERT, TEST_ASSERT_EQ, TEST_FAIL, TEST_REQUIRE, __TEST_REQUIRE, pr_info } = u;',
  '',
].join('\n');

let fixtureCount = 0;

/** Write a fixture program; returns its path and the 1-based line on which `marker` first appears. */
function program(body: string, marker?: string): { file: string; line: number } {
  const file = path.join(TMP, `prog${++fixtureCount}.js`);
  const text = PREAMBLE + body;
  fs.writeFileSync(file, text);
  const line = marker === undefined ? 0 : text.slice(0, text.indexOf(marker)).split('\n').length;
  return { file, line };
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const childEnv = { ...process.env, ...env };
    if (!('KSFT_TAP_LEVEL' in env)) delete childEnv.KSFT_TAP_LEVEL;
    const child = spawn(process.execPath, [file], { cwd: TMP, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('a plan of 3 with 2 passes and 1 failure prints the TAP lines and totals, and ksft_finished exits 1', async (t) => {
  const { file } = program(`
k.ksft_print_header();
k.ksft_set_plan(3);
k.ksft_test_result_pass('first\\n');
k.ksft_test_result(true, 'second');
k.ksft_test_result(false, 'third');
k.ksft_finished();
`);
  const r = await run(file);
  t.is(r.stdout, [
    'TAP version 13',
    '1..3',
    'ok 1 first',
    'ok 2 second',
    'not ok 3 third',
    '# Totals: pass:2 fail:1 xfail:0 xpass:0 skip:0 error:0',
    '',
  ].join('\n'));
  t.is(r.stderr, '');
  t.is(r.code, 1);
});

test('ksft_finished exits 0 when every planned test passed, skipped or failed as expected', async (t) => {
  const { file } = program(`
k.ksft_set_plan(3);
k.ksft_test_result_pass('a');
k.ksft_test_result_skip('b');
k.ksft_test_result_xfail('c');
k.ksft_finished();
`);
  const r = await run(file);
  t.is(r.stdout, '1..3\nok 1 a\nok 2 # SKIP b\nok 3 # XFAIL c\n# Totals: pass:1 fail:0 xfail:1 xpass:0 skip:1 error:0\n');
  t.is(r.code, 0);
});

test('every result kind and diagnostic has its own format, and a plan mismatch is reported before the totals', async (t) => {
  const { file } = program(`
k.ksft_set_plan(6);
k.ksft_print_msg('two\\nlines\\n');
k.ksft_perror('open /dev/kvm', 2);
k.ksft_test_result_skip('no cap');
k.ksft_test_result_xfail('known bug');
k.ksft_test_result_error('setup broke');
k.ksft_test_result_fail('bad');
k.ksft_test_result_pass('good');
const c = k.ksft_counts();
k.ksft_print_msg(JSON.stringify(c) + ' ' + k.ksft_test_num());
k.ksft_exit_pass();
`);
  const r = await run(file);
  t.is(r.stdout, [
    '1..6',
    '# two',
    '# lines',
    '# open /dev/kvm: No such file or directory (2)',
    'ok 1 # SKIP no cap',
    'ok 2 # XFAIL known bug',
    'not ok 3 # error setup broke',
    'not ok 4 bad',
    'ok 5 good',
    '# {"pass":1,"fail":1,"xfail":1,"xpass":0,"skip":1,"error":1,"plan":6} 5',
    '# Planned tests != run tests (6 != 5)',
    '# Totals: pass:1 fail:1 xfail:1 xpass:0 skip:1 error:1',
    '',
  ].join('\n'));
  t.is(r.code, 0);
});

test('ksft_exit_skip before any plan or result prints only "1..0 # SKIP <text>" and exits 4', async (t) => {
  const { file } = program(`
k.ksft_print_header();
k.ksft_exit_skip('no widget here\\n');
`);
  const r = await run(file);
  t.is(r.stdout, 'TAP version 13\n1..0 # SKIP no widget here\n');
  t.is(r.code, 4);
});

test('ksft_exit_skip after a result reports one more SKIP line and the totals, and exits 4', async (t) => {
  const { file } = program(`
k.ksft_set_plan(2);
k.ksft_test_result_pass('one');
k.ksft_exit_skip('rest needs a cap');
`);
  const r = await run(file);
  t.is(r.stdout, [
    '1..2',
    'ok 1 one',
    'ok 2 # SKIP rest needs a cap',
    '# Planned tests != run tests (2 != 1)',
    '# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0',
    '',
  ].join('\n'));
  t.is(r.code, 4);
});

test('ksft_exit_fail_msg bails out with the totals and exits 1', async (t) => {
  const { file } = program(`
k.ksft_test_result_pass('one');
k.ksft_exit_fail_msg('cannot continue');
`);
  const r = await run(file);
  t.is(r.stdout, 'ok 1 one\nBail out! cannot continue\n# Planned tests != run tests (0 != 1)\n# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0\n');
  t.is(r.code, 1);
});

test('the remaining exit helpers exit 0, 1, 2 and 3 after printing the totals', async (t) => {
  const cases: [string, number][] = [
    ['k.ksft_exit(true)', 0],
    ['k.ksft_exit(0)', 1],
    ['k.ksft_exit_fail()', 1],
    ['k.ksft_exit_xfail()', 2],
    ['k.ksft_exit_xpass()', 3],
  ];
  const results = await Promise.all(cases.map(([call]) => run(program(`${call};\nprocess.exit(99);\n`).file)));
  for (const [i, [call, code]] of cases.entries()) {
    t.is(results[i].code, code, call);
    t.is(results[i].stdout, '# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0\n', call);
  }
});

test('KSFT_TAP_LEVEL suppresses the TAP version line', async (t) => {
  const { file } = program('k.ksft_print_header();\nk.ksft_set_plan(0);\n');
  const r = await run(file, { KSFT_TAP_LEVEL: '1' });
  t.is(r.stdout, '1..0\n');
});

test('output written just before an exit is not lost on a pipe', async (t) => {
  const { file } = program(`
k.ksft_set_plan(3000);
for (let i = 1; i <= 3000; i++) k.ksft_test_result_pass('line ' + i + ' ' + 'x'.repeat(60));
k.ksft_exit_pass();
`);
  const r = await run(file);
  const lines = r.stdout.split('\n');
  t.is(lines.length, 3003);
  t.is(lines[3000], `ok 3000 line 3000 ${'x'.repeat(60)}`);
  t.is(lines[3001], '# Totals: pass:3000 fail:0 xfail:0 xpass:0 skip:0 error:0');
  t.is(r.code, 0);
});

test('a failed TEST_ASSERT prints the banner with the caller\'s file:line and condition text, then exits 254', async (t) => {
  const { file, line } = program(`
pr_info('Random seed: 0x6b8b4567');
const got = 2;
TEST_ASSERT(got === 2, 'not reached');
TEST_ASSERT(1 + got === 4 && \`\${got}\` !== ')', \`math is broken: \${got}\`);
`, 'TEST_ASSERT(1 + got');
  const r = await run(file);
  t.is(r.code, 254);
  t.is(r.stdout, 'Random seed: 0x6b8b4567\n');
  const pid = /pid=(\d+) /.exec(r.stderr)?.[1];
  t.is(r.stderr, [
    '==== Test Assertion Failure ====',
    `  ${file}:${line}: 1 + got === 4 && \`\${got}\` !== ')'`,
    `  pid=${pid} tid=0 errno=0 - Success`,
    '  math is broken: 2',
    '',
  ].join('\n'));
  t.truthy(pid);
});

test('TEST_ASSERT shows the errno it is given, from a number or an error object', async (t) => {
  const { file, line } = program(`
const err = Object.assign(new Error('x'), { errno: -2 });
TEST_ASSERT(false,
  'open failed', err);
`, 'TEST_ASSERT(false');
  const r = await run(file);
  t.is(r.code, 254);
  t.is(r.stderr.split('\n').slice(1, 3).join('\n'), `  ${file}:${line}: false\n  pid=${r.stderr.match(/pid=(\d+)/)?.[1]} tid=0 errno=2 - No such file or directory`);
});

test('a TEST_ASSERT failure with errno EACCES is a skip: exit 4', async (t) => {
  const { file } = program('TEST_ASSERT(false, \'open /dev/kvm\', { errno: 13 });\n');
  const r = await run(file);
  t.is(r.code, 4);
  t.regex(r.stderr, /^==== Test Assertion Failure ====\n.*\n {2}pid=\d+ tid=0 errno=13 - Permission denied\n {2}open \/dev\/kvm\n$/);
  t.is(r.stdout, 'Access denied - Exiting, skipping test\n');
});

test('TEST_ASSERT_EQ prints both values in hex and both expressions, and accepts a bigint equal to a number', async (t) => {
  const { file, line } = program(`
TEST_ASSERT_EQ(16n, 16);
TEST_ASSERT_EQ('a', 'a');
const exitReason = 0x10n;
TEST_ASSERT_EQ(exitReason, 17, 'exit reason');
`, 'TEST_ASSERT_EQ(exitReason');
  const r = await run(file);
  t.is(r.code, 254);
  const lines = r.stderr.split('\n');
  t.is(lines[1], `  ${file}:${line}: exitReason == 17`);
  t.is(lines[3], '  0x10 != 0x11 (exitReason != 17)');
  t.is(lines[4], '  exit reason');
});

test('TEST_ASSERT_EQ shows 0 as 0, negatives as 64-bit two\'s complement and strings quoted', async (t) => {
  const a = program('TEST_ASSERT_EQ(0, -1);\n');
  const b = program('TEST_ASSERT_EQ(\'abc\', "abd");\n');
  const [ra, rb] = await Promise.all([run(a.file), run(b.file)]);
  t.is(ra.stderr.split('\n')[3], '  0 != 0xffffffffffffffff (0 != -1)');
  t.is(rb.stderr.split('\n')[3], '  "abc" != "abd" (\'abc\' != "abd")');
  t.is(ra.code, 254);
  t.is(rb.code, 254);
});

test('TEST_FAIL fails unconditionally with the expression "false"', async (t) => {
  const { file, line } = program('TEST_FAIL(\'Unknown ucall 7\');\n', 'TEST_FAIL(');
  const r = await run(file);
  t.is(r.code, 254);
  t.is(r.stderr.split('\n')[1], `  ${file}:${line}: false`);
  t.is(r.stderr.split('\n')[3], '  Unknown ucall 7');
});

test('TEST_REQUIRE skips with "1..0 # SKIP - Requirement not met: <condition as written>" and exits 4', async (t) => {
  const { file } = program(`
const kvm_has_cap = (c) => c === 1;
TEST_REQUIRE(kvm_has_cap(1));
TEST_REQUIRE(kvm_has_cap(136 /* KVM_CAP_IMMEDIATE_EXIT */));
`);
  const r = await run(file);
  t.is(r.stdout, '1..0 # SKIP - Requirement not met: kvm_has_cap(136 /* KVM_CAP_IMMEDIATE_EXIT */)\n');
  t.is(r.stderr, '');
  t.is(r.code, 4);
});

test('TEST_REQUIRE with a text and __TEST_REQUIRE with a custom reason', async (t) => {
  const a = program('TEST_REQUIRE(false, \'KVM_CAP_IOREGIONFD\');\n');
  const b = program('__TEST_REQUIRE(true, \'x\');\n__TEST_REQUIRE(false, \'ioregionfd needs a 64-bit host\');\n');
  const [ra, rb] = await Promise.all([run(a.file), run(b.file)]);
  t.is(ra.stdout, '1..0 # SKIP - Requirement not met: KVM_CAP_IOREGIONFD\n');
  t.is(rb.stdout, '1..0 # SKIP - ioregionfd needs a 64-bit host\n');
  t.is(ra.code, 4);
  t.is(rb.code, 4);
});

test('sourceLocation maps a compiled .js position back to the .ts line through its source map', (t) => {
  const tsSource = [
    '// fixture',
    'import { TEST_ASSERT } from "./lib/test_util";',
    'const v: number = Number(process.argv[2]);',
    '',
    'if (v > 1) {',
    '  TEST_ASSERT(v === 2, `v is ${v}`);',
    '}',
    '',
  ].join('\n');
  const out = ts.transpileModule(tsSource, {
    fileName: 'x_test.ts',
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, sourceMap: true },
  });
  const dir = fs.mkdtempSync(path.join(TMP, 'map-'));
  fs.mkdirSync(path.join(dir, 'dist'));
  fs.mkdirSync(path.join(dir, 'src'));
  const map = JSON.parse(out.sourceMapText ?? '{}') as { sources: string[] };
  map.sources = ['../src/x_test.ts'];
  const jsFile = path.join(dir, 'dist', 'x_test.js');
  fs.writeFileSync(jsFile, out.outputText);
  fs.writeFileSync(`${jsFile}.map`, JSON.stringify(map));
  const jsLines = out.outputText.split('\n');
  const jsLine = jsLines.findIndex((l) => l.includes('TEST_ASSERT)(')) + 1;
  const jsColumn = jsLines[jsLine - 1].indexOf('TEST_ASSERT)(') + 1;
  t.true(jsLine > 0);
  t.deepEqual(sourceLocation({ file: jsFile, line: jsLine, column: jsColumn }), {
    file: path.join(dir, 'src', 'x_test.ts'),
    line: 6,
    column: 3,
  });
  // A file without a source map comes back unchanged.
  const plain = path.join(dir, 'dist', 'plain.js');
  fs.writeFileSync(plain, 'x();\n');
  t.deepEqual(sourceLocation({ file: plain, line: 1, column: 1 }), { file: plain, line: 1, column: 1 });
});
