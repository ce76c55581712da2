// ioregionfd_serialization_test: regions that share a read fd have one transaction in flight, waiting
// vCPUs are served first come first served, and each response reaches the vCPU that sent the command;
// regions on different fds run concurrently (docs/ioregionfd.md §5.3; must-test items 29-30).

import { KVM_CAP_IOREGIONFD } from '../../proto/kvm-uapi';
import { closeQuietly, eventfd, socketpair } from '../../proto/os';
import { EXPECT, EXPECT_EQ, FIXTURE, TEST, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { DeviceTask, spawn_device_task } from './lib/device_task';
import { GUEST_ASSERT_EQ, GUEST_DONE, GUEST_SYNC_ARGS, mmio_read, readq, vcpu_id } from './lib/guest';
import { __vm_deassign_ioregion, vm_set_ioregion } from './lib/ioregionfd';
import { __vcpu_run_start, __vcpu_run_wait, kvm_has_cap, kvm_vm_free, KvmVcpu, KvmVm, vm_create_with_vcpus } from './lib/kvm_util';
import { drainCommands, readCommand, writeAnswer } from './lib/raw_device';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_SYNC } from './lib/ucall_common';
import { TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

const BASE = 0xd0000000n;
const REGION = 0x10000n;
const ITERATIONS = 400;
/** More than HANDOFF_SLOTS + 1, so some waiters queue beyond the lock's mailbox slots. */
const VCPUS = 8;
const BACKLOG = 0xfff8n;

/** The mirror device's answer: a function of the request (device-task/devices/mirror.ts). */
function mirror(offset: bigint, size: number, userData: bigint): bigint {
  const mask = size >= 8 ? (1n << 64n) - 1n : (1n << BigInt(8 * size)) - 1n;
  return ((userData << 32n) ^ offset ^ 0x5a5a5a5a5a5a5a5an) & mask;
}

export function guest_hammer(): void {
  const id = BigInt(vcpu_id());
  const base = BASE + id * REGION;
  const sizes = [1, 2, 4, 8] as const;
  for (let i = 0; i < ITERATIONS; i++) {
    const size = sizes[i % 4];
    const offset = BigInt((i * 40 + Number(id) * 8) % 0x8000);
    GUEST_ASSERT_EQ(mmio_read(base + offset, size), mirror(offset, size, 0x100n + id), `vCPU ${id} read ${i}`);
  }
  GUEST_SYNC_ARGS(1, id === 0n ? readq(base + BACKLOG) : 0n);
  GUEST_DONE();
}

export function guest_one_read(): void {
  GUEST_SYNC_ARGS(1, readq(BASE + BigInt(vcpu_id()) * REGION));
  GUEST_DONE();
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function syncValue(vcpu: KvmVcpu): bigint | undefined {
  const uc = get_ucall(vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  return uc.cmd === UCALL_SYNC ? uc.args[2] : undefined;
}

interface Hammer {
  vm: KvmVm;
  vcpus: KvmVcpu[];
  dev: DeviceTask;
  /** Each vCPU's GUEST_SYNC value (vCPU 0's is the device's backlog count). */
  results: (bigint | undefined)[];
}

/** VCPUS vCPUs, each with a region of its own, all regions on one mirror device's fd. */
const hammer = FIXTURE('shared_fd', (): Hammer => {
  const [vm, vcpus] = vm_create_with_vcpus(VCPUS, guest_hammer);
  const dev = spawn_device_task({
    device: 'mirror', vm,
    regions: vcpus.map((v) => ({ guest_paddr: BASE + BigInt(v.id) * REGION, memory_size: REGION, user_data: 0x100n + BigInt(v.id) })),
  });
  dev.closeChannelFds();
  return { vm, vcpus, dev, results: [] };
}, async ({ vm, dev }) => {
  kvm_vm_free(vm);
  await dev.stop();
});

TEST_STEPS(hammer, [
  [`${VCPUS} vCPUs x ${ITERATIONS} reads of 1/2/4/8 bytes on regions sharing one fd: every response matched its own request`, (s) => {
    s.vcpus.forEach(__vcpu_run_start);
    s.results = s.vcpus.map((v) => {
      const r = __vcpu_run_wait(v);
      TEST_ASSERT(r.ret === 0, `vCPU ${v.id} KVM_RUN failed: errno ${r.errno}`);
      return syncValue(v);
    });
    return s.results.every((x) => x !== undefined);
  }],
  ['the device never found a second command queued behind an unanswered one', ({ results }) => {
    TH_LOG(`backlog ${results[0]}`);
    return results[0] === 0n;
  }],
]);

interface Fifo {
  vm: KvmVm;
  vcpus: KvmVcpu[];
  /** KVM's end of the one socket all three regions share, and the device's end (the test). */
  kvmEnd: number;
  dev: number;
  order: bigint[];
  values: (bigint | undefined)[];
}

/** Three vCPUs, one 8-byte region each, all on one socket whose device end the test plays. */
const fifo = FIXTURE('fifo', (): Fifo => {
  const [vm, vcpus] = vm_create_with_vcpus(3, guest_one_read);
  const [kvmEnd, dev] = socketpair('seqpacket');
  for (const v of vcpus) {
    vm_set_ioregion(vm, { guest_paddr: BASE + BigInt(v.id) * REGION, memory_size: 8n, user_data: BigInt(v.id), read_fd: kvmEnd, write_fd: kvmEnd });
  }
  return { vm, vcpus, kvmEnd, dev, order: [], values: [] };
}, (s) => {
  // The device end first: a vCPU still waiting for an answer sees EOF, not a freed VM.
  [s.dev, s.kvmEnd].forEach(closeQuietly);
  kvm_vm_free(s.vm);
});

TEST_STEPS(fifo, [
  ['one command in flight per fd: vCPUs 1 and 2 wait', ({ vcpus, dev }) => {
    // vCPU 0 takes the fd and waits for an answer; 1, then 2, queue behind it.
    __vcpu_run_start(vcpus[0]);
    const first = readCommand(dev);
    __vcpu_run_start(vcpus[1]);
    sleep(80);
    __vcpu_run_start(vcpus[2]);
    sleep(80);
    return first?.cmd.userData === 0n && drainCommands(dev).length === 0;
  }],
  ['waiting vCPUs are served in arrival order', (s) => {
    writeAnswer(s.dev, 0xa0n);
    for (let i = 1; i <= 2; i++) {
      const c = readCommand(s.dev)!;
      s.order.push(c.cmd.userData);
      writeAnswer(s.dev, 0xa0n + c.cmd.userData);
    }
    s.values = s.vcpus.map((v) => {
      TEST_ASSERT(__vcpu_run_wait(v).ret === 0, `vCPU ${v.id} KVM_RUN`);
      return syncValue(v);
    });
    TH_LOG(`order ${s.order.join(',')}`);
    return s.order.join(',') === '1,2';
  }],
  ['each response went to the vCPU that sent the command', ({ values }) => values.join(',') === [0xa0n, 0xa1n, 0xa2n].join(',')],
]);

TEST('a context outlives the region that created it: one command in flight on the shared socket', () => {
  // A and B share socket 1; A goes (its fd with it); C registers on socket 2, D on socket 1. The
  // context of socket 1 must still recognise D (and not C): B and D never have two commands out.
  const [vm, [v0, v1]] = vm_create_with_vcpus(2, guest_one_read);
  const [a1, d1] = socketpair('seqpacket');
  const [a2, d2] = socketpair('seqpacket');
  const reg = (paddr: bigint, fd: number) => vm_set_ioregion(vm, { guest_paddr: paddr, memory_size: 8n, read_fd: fd, write_fd: fd });
  reg(BASE + 2n * REGION, a1);
  reg(BASE, a1);
  TEST_ASSERT(__vm_deassign_ioregion(vm, BASE + 2n * REGION, 8n).ret === 0, 'deassign A');
  reg(BASE + 3n * REGION, a2);
  reg(BASE + REGION, a1);
  [v0, v1].forEach(__vcpu_run_start);
  sleep(150);
  const inFlight = drainCommands(d1).length;
  [a1, d1, a2, d2].forEach(closeQuietly);
  kvm_vm_free(vm);
  EXPECT_EQ(inFlight, 1, 'commands in flight on the shared socket');
});

TEST('regions on different fds are in flight at the same time', async () => {
  // Two rendezvous devices with crossed eventfds: each read answers 1 only if the other device got
  // its read while this one was still in flight, i.e. the two transactions overlapped.
  const [vm, vcpus] = vm_create_with_vcpus(2, guest_one_read);
  const [e1, e2] = [eventfd(), eventfd()];
  const devs = [
    spawn_device_task({ device: 'rendezvous', vm, eventfds: { out: e1, in: e2 }, regions: [{ guest_paddr: BASE, memory_size: 8n }] }),
    spawn_device_task({ device: 'rendezvous', vm, eventfds: { out: e2, in: e1 }, regions: [{ guest_paddr: BASE + REGION, memory_size: 8n }] }),
  ];
  devs.forEach((d) => d.closeChannelFds());
  vcpus.forEach(__vcpu_run_start);
  const values = vcpus.map((v) => {
    TEST_ASSERT(__vcpu_run_wait(v).ret === 0, `vCPU ${v.id} KVM_RUN`);
    return syncValue(v);
  });
  kvm_vm_free(vm);
  for (const d of devs) await d.stop();
  [e1, e2].forEach(closeQuietly);
  EXPECT(values[0] === 1n && values[1] === 1n, `both rendezvous devices to answer 1, got ${values.join(', ')}`);
});

if (require.main === module) {
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  void test_harness_run();
}
