// vmm_misuse_test: what a VMM (a test program) gets wrong is answered with a clear, defined failure,
// never a crash, a hang, runaway processes or silence:
// - a device task whose executable cannot start makes spawn_device_task throw, before any region;
// - a program without the `require.main === module` guard, loaded by a vCPU thread for its guest
//   code, has its attempt to open /dev/kvm refused (no kernel-model starts another one);
// - guest code that throws is reported with its exception and stack, not as a missing ucall;
// - guest memory read through a view after kvm_vm_free neither crashes nor answers through kvm_util;
// - a kernel-model started by hand without its system socket on fd 3 exits 2 with a message.

import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { GuestEntryType } from '../../proto/control';
import { EINVAL, errnoName } from '../../proto/errno';
import { KVM_EMU_SET_GUEST_ENTRY } from '../../proto/kvm-uapi';
import { closeQuietly, socketpair } from '../../proto/os';
import { EXPECT, EXPECT_EQ, TEST, test_harness_run, TH_LOG } from '../kselftest_harness';
import { spawn_device_task } from './lib/device_task';
import { vm_ioregion_stats } from './lib/ioregionfd';
import { __vcpu_ioctl, kvm_dev_pid, kvm_fd, kvm_vm_free, vm_create, vm_vcpu_add } from './lib/kvm_util';

const FIXTURES = path.join(__dirname, 'fixtures');
const KERNEL_MODEL = path.join(__dirname, '..', '..', 'kernel-model', 'main.js');

/** Live child processes of `pid`. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid && fields[0] !== 'Z') out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

TEST('a device task that cannot start throws and registers no region', () => {
  const vm = vm_create();
  let thrown = '';
  try {
    spawn_device_task({ command: ['/nonexistent/device-task'], vm, regions: [{ guest_paddr: 0xd0000000n, memory_size: 8n }] });
  } catch (e) {
    thrown = (e as Error).message;
  }
  const regions = vm_ioregion_stats(vm).length;
  kvm_vm_free(vm);
  TH_LOG(thrown);
  EXPECT(/cannot run '\/nonexistent\/device-task': ENOENT/.test(thrown), 'an ENOENT naming the command');
  EXPECT_EQ(regions, 0, 'regions registered');
});

TEST('a guest module that starts its test on load: EINVAL naming the fix, and the kernel-model started nothing', () => {
  const vm = vm_create();
  const vcpu = vm_vcpu_add(vm, 0);
  const entry = GuestEntryType.encode({ module: path.join(FIXTURES, 'unguarded_guest.js'), export: 'guest_code' }).finish();
  const r = __vcpu_ioctl(vcpu, KVM_EMU_SET_GUEST_ENTRY, entry);
  const kids = childrenOf(kvm_dev_pid(kvm_fd())!);
  kvm_vm_free(vm);
  TH_LOG(`${errnoName(r.errno)}: ${r.detail.split(':')[0]}`);
  EXPECT(r.ret === -1 && r.errno === EINVAL && /require\.main === module/.test(r.detail), 'EINVAL naming require.main === module');
  EXPECT_EQ(kids.length, 0, 'kernel-model children');
});

function misuse(mode: string): { status: number | null; signal: string | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--enable-source-maps', path.join(FIXTURES, 'vmm_misuse.js'), mode], { encoding: 'utf8', timeout: 30000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

TEST('guest code that throws fails the test with the guest\'s exception and its .ts stack', () => {
  const r = misuse('throwing-guest');
  TH_LOG(`exit ${r.status ?? r.signal}`);
  EXPECT(r.status === 254 && /KVM_EXIT_INTERNAL_ERROR/.test(r.stderr) && /deliberate guest bug/.test(r.stderr) && /vmm_misuse\.ts:\d+/.test(r.stderr),
    'exit 254 with KVM_EXIT_INTERNAL_ERROR, the exception and a vmm_misuse.ts:LINE frame on stderr');
});

TEST('a view read after kvm_vm_free does not crash, and addr_gpa2hva refuses the freed VM', () => {
  const r = misuse('freed-view');
  TH_LOG(`exit ${r.status ?? r.signal}`);
  EXPECT(r.status === 254 && /stale read after kvm_vm_free: 0x5a/.test(r.stdout) && /the VM was freed/.test(r.stderr),
    'exit 254 after the stale read, with "the VM was freed" on stderr');
});

TEST('the kernel-model with a stream socket on fd 3 exits 2 with a message', () => {
  const asPipe = spawnSync(process.execPath, [KERNEL_MODEL], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'], encoding: 'utf8', timeout: 10000 });
  TH_LOG(`exit ${asPipe.status ?? asPipe.signal}`);
  EXPECT(asPipe.status === 2 && /fd 3 must be the system socket .*found a stream socket/.test(asPipe.stderr), 'exit 2 naming the stream socket');
});

TEST('the kernel-model started with fd 3 closed (Node then opens its own there) exits 2 with a message', () => {
  const closed = spawnSync(process.execPath, [KERNEL_MODEL], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 10000 });
  TH_LOG(`exit ${closed.status ?? closed.signal}`);
  EXPECT(closed.status === 2 && /fd 3 must be the system socket .*found/.test(closed.stderr), 'exit 2 naming what was found on fd 3');
});

TEST('the kernel-model refuses an --ioregionfd-poll-ns that is not a whole number of ns: exit 2 naming it', () => {
  for (const bad of ['-1', '1.5', 'soon']) {
    const [ours, theirs] = socketpair('seqpacket');
    const r = spawnSync(process.execPath, [KERNEL_MODEL, '--ioregionfd-poll-ns', bad], { stdio: ['ignore', 'pipe', 'pipe', theirs], encoding: 'utf8', timeout: 10000 });
    closeQuietly(ours);
    closeQuietly(theirs);
    TH_LOG(`${bad}: exit ${r.status ?? r.signal}`);
    EXPECT(r.status === 2 && /bad argument '--ioregionfd-poll-ns'/.test(r.stderr), `--ioregionfd-poll-ns ${bad}: exit 2 naming the option`);
  }
});

if (require.main === module) void test_harness_run();
