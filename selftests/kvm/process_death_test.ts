// process_death_test: a VMM or a kernel-model that dies by SIGKILL leaves no process behind. The
// kernel-model and device tasks ask for SIGKILL when their parent (the VMM) dies (PR_SET_PDEATHSIG);
// one whose parent died before it got that far sees EOF instead: the kernel-model on its system
// socket, a device task on its channels once the kernel-model is gone. A VMM whose kernel-model died
// sees its next ioctl fail and exits. The VMM is the stress campaign's (stress/process_kill_vmm.ts):
// a VM, a testdev device task and a guest that keeps it busy; every process it starts inherits a
// marker in its environment, which is how survivors are found.

import { EXPECT, EXPECT_EQ, TEST, test_harness_run, TH_LOG } from '../kselftest_harness';
import { processAlive } from '../stress/proc';
import { commandOf, MARKER_ENV, survivors, VmmUnderTest } from '../stress/process-kill';

/** Hang guards, not timing requirements. */
const START_BOUND_MS = 30_000;
const CLEANUP_BOUND_MS = 10_000;

let round = 0;
const newMarker = () => `${MARKER_ENV}=${process.pid}-process_death_test-${++round}`;

/** What is left of a round once its processes had CLEANUP_BOUND_MS to go (and kill it, so the test leaves nothing). */
async function leftOf(marker: string): Promise<string[]> {
  const left = await survivors(marker, CLEANUP_BOUND_MS);
  const names = left.map((pid) => `${pid} (${commandOf(pid)})`);
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  return names;
}

TEST('a VMM killed the moment its kernel-model starts leaves no kernel-model', async () => {
  const marker = newMarker();
  const vmm = new VmmUnderTest(marker, false);
  // The kernel-model is still starting Node: it has not asked for PR_SET_PDEATHSIG yet.
  EXPECT(await vmm.reported(() => vmm.pids.kernelModel !== undefined, START_BOUND_MS), 'the VMM reports its kernel-model');
  vmm.child.kill('SIGKILL');
  await vmm.exited;
  EXPECT_EQ((await leftOf(marker)).join(', '), '', 'processes left');
});

TEST('a VMM killed while its guest runs leaves no kernel-model and no device task', async () => {
  const marker = newMarker();
  const vmm = new VmmUnderTest(marker, false);
  EXPECT(await vmm.reported(() => vmm.running, START_BOUND_MS), `the guest runs ${vmm.stderr}`);
  vmm.child.kill('SIGKILL');
  await vmm.exited;
  EXPECT_EQ((await leftOf(marker)).join(', '), '', 'processes left');
});

TEST('a kernel-model killed while the guest runs: the VMM exits and its device task too', async () => {
  const marker = newMarker();
  const vmm = new VmmUnderTest(marker, false);
  EXPECT(await vmm.reported(() => vmm.running, START_BOUND_MS), `the guest runs ${vmm.stderr}`);
  const km = vmm.pids.kernelModel!;
  if (processAlive(km)) process.kill(km, 'SIGKILL');
  const exited = await vmm.exitedWithin(CLEANUP_BOUND_MS);
  EXPECT(exited, 'the VMM exits once its kernel-model is gone');
  if (!exited) vmm.child.kill('SIGKILL');
  TH_LOG(`the VMM said: ${vmm.stderr.trim().split('\n').find((l) => /^\w*Error/.test(l)) ?? vmm.stderr.trim().split('\n').pop()}`);
  EXPECT_EQ((await leftOf(marker)).join(', '), '', 'processes left');
});

if (require.main === module) {
  void test_harness_run();
}
