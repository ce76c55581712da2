// spawnDeviceTask with any executable: fd placeholders in argv, captured stdout/stderr, and a VMM
// that exits (normally or by an uncaught exception) taking the tasks it spawned with it.

import test from 'ava';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { spawnDeviceTask } from './device-task';

test('argv placeholders become the fd numbers of the manifest; output "capture" keeps stdout and stderr', async (t) => {
  const task = spawnDeviceTask({
    command: ['/bin/sh', '-c', 'echo "cmd=$1 resp=$2 life=$3"; echo "log line" >&2', 'sh', '{cmd_fd:0}', '{resp_fd:0}', '--lifeline={lifeline_fd}'],
    output: 'capture',
  });
  const status = await task.stop();
  const { cmd_fd, resp_fd } = task.manifest.channels[0];
  t.deepEqual(status, { code: 0, signal: null });
  t.is(task.output().stdout, `cmd=${cmd_fd} resp=${resp_fd} life=--lifeline=${task.manifest.lifeline_fd}\n`);
  t.is(task.output().stderr, 'log line\n');
});

test('a pollNs that is not a whole number of ns is a RangeError naming it, before anything runs', (t) => {
  for (const bad of [-1, 2.5]) t.throws(() => spawnDeviceTask({ command: ['/bin/true'], pollNs: bad }), { instanceOf: RangeError, message: new RegExp(`pollNs.*${bad}`) });
});

test('an unknown placeholder is an error before anything runs', (t) => {
  t.throws(() => spawnDeviceTask({ command: ['/bin/true', '{cmd_fd:7}'] }), { message: /cmd_fd:7/ });
});

function alive(pid: number): boolean {
  try {
    // A zombie (killed, not yet reaped by whoever inherited it) counts as gone.
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

for (const [how, end] of [['returns from main', ''], ['throws an uncaught exception', "throw new Error('VMM bug');"]] as const) {
  test(`a VMM that ${how} stops the device tasks it spawned`, async (t) => {
    const lib = path.resolve(__dirname, '..', 'dist', 'vmm', 'device-task.js');
    if (!fs.existsSync(lib)) return t.fail('dist/ is not built (npm test builds it first)');
    const vmm = `const { spawnDeviceTask } = require(${JSON.stringify(lib)});
const task = spawnDeviceTask({ command: ['/bin/sleep', '60'] });
console.log(task.pid);
${end}`;
    let out: string;
    try {
      out = execFileSync(process.execPath, ['-e', vmm], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 20_000 });
    } catch (e) {
      out = (e as { stdout: string }).stdout;
    }
    const pid = Number(out.trim());
    t.true(pid > 0, `the VMM printed its task's pid (${out})`);
    for (const deadline = Date.now() + 5000; alive(pid) && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 20));
    t.false(alive(pid), `device task ${pid} is gone`);
  });
}
