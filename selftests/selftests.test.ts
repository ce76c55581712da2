// Runs the whole kvm selftest collection through the runner (dist/, built by `npm test` before ava)
// and checks its TAP report, and that the run leaves nothing behind: no kernel-model process it
// started, no fd open in this process.

import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const REPO = path.resolve(__dirname, '..');
const RUNNER = path.join(REPO, 'dist', 'selftests', 'run_kselftest.js');
/** How long kernel-models may take to go away after the runner exits (they exit on their own). */
const LEFTOVER_GRACE_MS = 5000;
/** Marks every process of this run: the runner, the tests and their kernel-models inherit it. */
const RUN_MARKER_VAR = 'KVM_SELFTESTS_RUN_ID';

interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function runRunner(env: NodeJS.ProcessEnv): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RUNNER], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    // 'close' comes after the exit and after both pipes are closed.
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Live (not zombie) processes running the kernel-model, by pid. */
function kernelModels(): Map<number, string> {
  const out = execFileSync('ps', ['-eo', 'pid=,stat=,args='], { encoding: 'utf8' });
  const found = new Map<number, string>();
  for (const line of out.split('\n')) {
    const m = /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (m && !m[2].startsWith('Z') && m[3].includes('kernel-model/main.js')) found.set(Number(m[1]), m[3]);
  }
  return found;
}

/** True if the process has our run's marker in its environment (so this run started it). */
function startedByThisRun(pid: number, marker: string): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(marker);
  } catch {
    return false; // gone meanwhile
  }
}

/** A failed result line with the `# ` lines its program printed, and the runner's line about it. */
function failedOutput(lines: string[], result: string): string {
  const name = /selftests: kvm: (\S+)/.exec(result)?.[1] ?? '';
  const start = lines.indexOf(`# selftests: kvm: ${name}`);
  const end = lines.indexOf(result);
  const own = start >= 0 && end > start ? lines.slice(start, end) : [];
  return [...own.filter((l) => !/^# ok \d+ /.test(l)), result].join('\n');
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('every kvm selftest passes through the runner, and no kernel-model or fd outlives the run', async (t) => {
  const id = randomBytes(8).toString('hex');
  const marker = `${RUN_MARKER_VAR}=${id}`;
  const before = kernelModels();
  const fdsBefore = openFds();

  const started = Date.now();
  const ran = await runRunner({ ...process.env, [RUN_MARKER_VAR]: id });
  t.log(`runner took ${Date.now() - started} ms`);
  const lines = ran.stdout.split('\n');
  const plan = lines.find((l) => /^1\.\.\d+$/.test(l));
  const results = lines.filter((l) => /^(not )?ok \d+ /.test(l));
  const failed = results.filter((l) => !l.startsWith('ok '));
  // On failure, show what the failed programs printed (not the whole run).
  const report = [...failed.map((l) => failedOutput(lines, l)), ran.stderr].join('\n');

  t.is(ran.code, 0, report);
  t.truthy(plan, 'the runner printed a plan');
  t.true(results.length > 0, 'the runner reported results');
  t.is(results.length, Number(plan?.slice(3)), 'one result per planned test');
  t.deepEqual(failed, [], report);
  results.forEach((l, i) => t.regex(l, new RegExp(`^ok ${i + 1} selftests: kvm: \\w+`)));

  const totals = /^# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) skip:(\d+) error:(\d+)$/m.exec(ran.stdout);
  t.truthy(totals, 'a # Totals: line');
  if (totals) {
    const [pass, fail, xfail, xpass, skip, error] = totals.slice(1).map(Number);
    t.deepEqual({ fail, xfail, xpass, error }, { fail: 0, xfail: 0, xpass: 0, error: 0 });
    t.is(pass + skip, results.length);
  }

  // Kernel-models exit when their system fd closes; give them a moment, then none of ours may remain.
  let leftovers: string[] = [];
  for (const deadline = Date.now() + LEFTOVER_GRACE_MS; ;) {
    leftovers = [...kernelModels()]
      .filter(([pid]) => !before.has(pid) && startedByThisRun(pid, marker))
      .map(([pid, args]) => `${pid} ${args}`);
    if (leftovers.length === 0 || Date.now() > deadline) break;
    await sleep(100);
  }
  t.deepEqual(leftovers, [], 'kernel-model processes of this run still alive');

  t.is(openFds(), fdsBefore, 'fds of this process after the run');
});
