// Checks the runner's TAP report, exit codes, filters, timeouts and process-group cleanup against a directory of fixture test programs.

import test from 'ava';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';

const REPO = path.resolve(__dirname, '..');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'run-kselftest-test-'));
test.after.always(() => fs.rmSync(TMP, { recursive: true, force: true }));

// Most runs use a copy of the runner transpiled once here (a process per run without ts-node
// starts much faster); one test runs the .ts source itself through ts-node.
const MODULES = path.join(TMP, 'modules');
for (const rel of ['selftests/run_kselftest.ts', 'selftests/kselftest.ts', 'proto/errno.ts', 'proto/guest-cpu.ts']) {
  const out = ts.transpileModule(fs.readFileSync(path.join(REPO, rel), 'utf8'), {
    fileName: rel,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  });
  fs.mkdirSync(path.dirname(path.join(MODULES, rel)), { recursive: true });
  fs.writeFileSync(path.join(MODULES, rel.replace(/\.ts$/, '.js')), out.outputText);
}
const RUNNER = path.join(MODULES, 'selftests', 'run_kselftest.js');

/** A test program that starts a grandchild sharing its output pipe, then never ends (and ignores SIGTERM). */
const HANG = `
const { spawn } = require('child_process');
const g = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: ['ignore', 'inherit', 'inherit'] });
process.on('SIGTERM', () => {});
console.log('grandchild ' + g.pid);
setInterval(() => {}, 1000);
`;

/** Marks that it ran, which it never should. */
const MUST_NOT_RUN = 'require(\'fs\').writeFileSync(require(\'path\').join(__dirname, \'ran-\' + require(\'path\').basename(__filename)), \'\');\n';

function makeDir(name: string, files: Record<string, string>): string {
  const dir = path.join(TMP, name);
  for (const [rel, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), text);
  }
  return dir;
}

const SUITE = makeDir('suite', {
  'a_pass_test.js': 'console.log(\'hello from a\');\nconsole.error(\'to stderr\');\n',
  'b_skip_test.js': 'console.log(\'skipping b\');\nprocess.exit(4);\n',
  'c_fail_test.js': 'process.stdout.write(\'no newline\');\nprocess.exitCode = 254;\n',
  'd_hang_test.js': HANG,
  'e_perf_test.js': MUST_NOT_RUN,
  'lib/f_lib_test.js': MUST_NOT_RUN,
  'sub/g_sub_test.js': 'console.log(\'from a subfolder\');\n',
  'h_signal_test.js': 'process.kill(process.pid, \'SIGKILL\');\n',
  'helper.js': MUST_NOT_RUN,
  'settings': '# per-collection settings\ntimeout=7\n',
});

interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run the runner; `onStdout` sees the output so far and may act on it (e.g. signal the runner). */
function runRunner(args: string[], onStdout?: (soFar: string, pid: number) => void, viaTsNode = false): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const argv = viaTsNode ? ['-r', 'ts-node/register/transpile-only', path.join(__dirname, 'run_kselftest.ts'), ...args] : [RUNNER, ...args];
    const child = spawn(process.execPath, argv, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      onStdout?.(stdout, child.pid ?? 0);
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Whether `pid` is a live process (a zombie waiting for a reaper counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Poll until `pid` is gone or `ms` have passed; true if it is gone. */
async function gone(pid: number, ms = 2000): Promise<boolean> {
  const end = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

test('a full run reports each test as TAP 13, kills a timed-out test with its grandchild, and exits 1', async (t) => {
  // 5 s, not 1: on a loaded CI machine a Node start alone has taken over a second, which timed out the passing tests.
  const r = await runRunner(['--dir', SUITE, '-o', '5']);
  const grandchild = Number(/^# grandchild (\d+)$/m.exec(r.stdout)?.[1]);
  t.true(grandchild > 0);
  const ov = '# overriding timeout to 5';
  t.is(r.stdout, [
    'TAP version 13',
    '1..6',
    ov, '# selftests: kvm: a_pass_test', '# hello from a', '# to stderr', 'ok 1 selftests: kvm: a_pass_test',
    ov, '# selftests: kvm: b_skip_test', '# skipping b', 'ok 2 selftests: kvm: b_skip_test # SKIP',
    ov, '# selftests: kvm: c_fail_test', '# no newline', 'not ok 3 selftests: kvm: c_fail_test # exit=254',
    ov, '# selftests: kvm: d_hang_test', `# grandchild ${grandchild}`, 'not ok 4 selftests: kvm: d_hang_test # TIMEOUT 5 seconds',
    ov, '# selftests: kvm: g_sub_test', '# from a subfolder', 'ok 5 selftests: kvm: g_sub_test',
    ov, '# selftests: kvm: h_signal_test', 'not ok 6 selftests: kvm: h_signal_test # exit=137',
    '# Totals: pass:2 fail:3 xfail:0 xpass:0 skip:1 error:0',
    '',
  ].join('\n'));
  t.is(r.stderr, '');
  t.is(r.code, 1);
  t.true(await gone(grandchild), `grandchild ${grandchild} outlived the run`);
  t.deepEqual(fs.readdirSync(SUITE).filter((f) => f.startsWith('ran-')), []);
  t.false(fs.existsSync(path.join(SUITE, 'lib', 'ran-f_lib_test.js')));
});

test('-t selects tests by NAME or kvm:NAME, renumbers them, reads the settings timeout, and -f makes failures exit 0', async (t) => {
  const r = await runRunner(['--dir', SUITE, '-t', 'c_fail_test', '--test', 'kvm:a_pass_test', '-f']);
  t.is(r.stdout, [
    'TAP version 13',
    '1..2',
    '# timeout set to 7', '# selftests: kvm: a_pass_test', '# hello from a', '# to stderr', 'ok 1 selftests: kvm: a_pass_test',
    '# timeout set to 7', '# selftests: kvm: c_fail_test', '# no newline', 'not ok 2 selftests: kvm: c_fail_test # exit=254',
    '# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:0 error:0',
    '',
  ].join('\n'));
  t.is(r.code, 0);
});

test('-S leaves tests out and a run without failures exits 0', async (t) => {
  const r = await runRunner(['--dir', SUITE, '-S', 'd_hang_test', '--skip=kvm:c_fail_test', '-S', 'h_signal_test']);
  const results = r.stdout.split('\n').filter((l) => /^(not )?ok /.test(l));
  t.deepEqual(results, [
    'ok 1 selftests: kvm: a_pass_test',
    'ok 2 selftests: kvm: b_skip_test # SKIP',
    'ok 3 selftests: kvm: g_sub_test',
  ]);
  t.true(r.stdout.includes('1..3\n'));
  t.true(r.stdout.endsWith('# Totals: pass:2 fail:0 xfail:0 xpass:0 skip:1 error:0\n'));
  t.is(r.code, 0);
});

test('-l lists kvm:NAME for every test program, without benchmarks, lib/ or non-test files, and runs nothing', async (t) => {
  const r = await runRunner(['--dir', SUITE, '-c', 'kvm', '-l']);
  t.is(r.stdout, 'kvm:a_pass_test\nkvm:b_skip_test\nkvm:c_fail_test\nkvm:d_hang_test\nkvm:g_sub_test\nkvm:h_signal_test\n');
  t.is(r.code, 0);
});

test('the TypeScript source runs through ts-node and lists the same tests', async (t) => {
  const r = await runRunner(['--list', '--dir', SUITE], undefined, true);
  t.is(r.stdout.split('\n')[0], 'kvm:a_pass_test');
  t.is(r.stdout.split('\n').length, 7);
  t.is(r.code, 0);
});

test('an unknown option, a -t naming no test, another collection or a bad timeout exit 2 with a message on stderr', async (t) => {
  const cases = [
    ['--bogus'],
    ['-t', 'no_such_test'],
    ['-t', 'net:a_pass_test'],
    ['-c', 'net'],
    ['-o', 'soon'],
    ['-t'],
    ['stray'],
    ['-S', 'no_such_test'],
  ];
  const results = await Promise.all(cases.map((args) => runRunner(['--dir', SUITE, ...args])));
  for (const [i, r] of results.entries()) {
    t.is(r.code, 2, cases[i].join(' '));
    t.is(r.stdout, '', cases[i].join(' '));
    t.regex(r.stderr, /^run_kselftest: /, cases[i].join(' '));
  }
  t.regex(results[0].stderr, /unknown option '--bogus'/);
  t.regex(results[1].stderr, /no_such_test/);
  t.regex(results[7].stderr, /-S no_such_test: no test of that name/);
});

test('a directory without compiled test programs is exit 2 with a message, never a pass of nothing', async (t) => {
  const empty = makeDir('empty', { 'README': 'no tests here\n' });
  const r = await runRunner(['--dir', empty]);
  t.is(r.code, 2);
  t.is(r.stdout, '');
  t.regex(r.stderr, /no compiled \*_test\.js programs/);
});

test('the TypeScript source run without --dir runs the built programs in dist/', async (t) => {
  const r = await runRunner(['--list'], undefined, true);
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.split('\n').includes('kvm:ioregionfd_test'));
});

test('without a settings file the timeout is 45 s, and a grandchild holding the output pipe is killed 5 s after the test exits', async (t) => {
  t.timeout(30_000);
  const dir = makeDir('orphan', {
    'orphan_test.js': `
const { spawn } = require('child_process');
const g = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: ['ignore', 'inherit', 'inherit'] });
console.log('grandchild ' + g.pid);
g.unref();
`,
  });
  const started = Date.now();
  const r = await runRunner(['--dir', dir]);
  const grandchild = Number(/^# grandchild (\d+)$/m.exec(r.stdout)?.[1]);
  t.is(r.stdout, `TAP version 13\n1..1\n# timeout set to 45\n# selftests: kvm: orphan_test\n# grandchild ${grandchild}\nok 1 selftests: kvm: orphan_test\n# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0\n`);
  t.true(Date.now() - started < 20_000);
  t.true(await gone(grandchild), `grandchild ${grandchild} outlived the run`);
});

test('SIGTERM to the runner takes down the running test\'s whole process group', async (t) => {
  t.timeout(30_000);
  const dir = makeDir('interrupt', {
    'hang_test.js': `console.log('self ' + process.pid);\n${HANG}`,
    'settings': 'timeout=60\n',
  });
  let signalled = false;
  const r = await runRunner(['--dir', dir], (soFar, runnerPid) => {
    if (!signalled && /^# grandchild \d+$/m.test(soFar)) {
      signalled = true;
      process.kill(runnerPid, 'SIGTERM');
    }
  });
  const testPid = Number(/^# self (\d+)$/m.exec(r.stdout)?.[1]);
  const grandchild = Number(/^# grandchild (\d+)$/m.exec(r.stdout)?.[1]);
  t.true(signalled);
  t.is(r.code, 128 + os.constants.signals.SIGTERM);
  t.true(await gone(testPid), `test ${testPid} outlived the runner`);
  t.true(await gone(grandchild), `grandchild ${grandchild} outlived the runner`);
});
