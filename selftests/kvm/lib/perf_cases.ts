// The guest-driven perf cases: a VM per case whose guest code (lib/perf_guest.ts) times its own loop
// of MMIO accesses, one round per KVM_RUN, so a program can interleave them with other cases.
//
//   ioregionfd_read_case     readl -> testdev task -> guest over a region (optionally 999 more on the bus,
//                            placed on one CPU, or with polling off at both ends)
//   ioregionfd_write_case    writel, non-posted or posted (a fence read closes each round)
//   exit_path_read_case      readl -> KVM_EXIT_MMIO -> this process -> testdev task -> KVM_RUN
//   mmio_exit_case           readl -> KVM_EXIT_MMIO -> this process completes it -> KVM_RUN (no device)
//   ioeventfd_write_case     writel to a KVM_IOEVENTFD doorbell, counted by the doorbell task
//   ioregionfd_read_rate_case  N vCPUs reading at once, each on its own region/fd/task or all on one

import {
  decodeResp, encodeCmdFields, IOREGIONFD_CMD_READ, IOREGIONFD_CMD_WRITE, IOREGIONFD_MSG_SIZE,
} from '../../../proto/ioregionfd-wire';
import { IOEVENTFD, KVM_CAP_IOEVENTFD, KVM_EXIT_IO, KVM_EXIT_MMIO, KVM_IOEVENTFD, KVM_IOREGION_POSTED_WRITES, PAGE_SIZE } from '../../../proto/kvm-uapi';
import { closeQuietly, eventfd, readRaw, setAffinity, writeRaw } from '../../../proto/os';
import { DeviceChannel, DeviceTask, RegionSpec, spawn_device_task } from './device_task';
import { vm_ioregion_stats } from './ioregionfd';
import {
  __vcpu_run_start, __vcpu_run_wait, close_kvm_dev, exit_reason, GuestCode, kvm_check_cap, kvm_vm_free, KvmVcpu, KvmVm, le_store,
  le_value, open_kvm_dev_path, run_mmio, vcpu_args_set, vm_alloc, vm_create_with_one_vcpu, vm_create_with_vcpus, vm_ioctl,
} from './kvm_util';
import { GuestRound, guest_round, perf_guest_next, PerfCase, PerfOptions, perf_ops } from './perf';
import { guest_doorbell_loop, guest_read_loop, guest_write_loop } from './perf_guest';
import { get_ucall } from './ucall_common';
import { TEST_ASSERT, TEST_FAIL } from './test_util';

/** Where the measured devices live: above the 4 MiB of RAM vm_create() gives, below 4 GiB. */
export const MMIO_BASE = 0xc000_0000n;
const STRIDE = BigInt(PAGE_SIZE);
/** testdev's region: one echoing 64-bit value. */
const REGION_SIZE = 8n;
const PATTERN = 0x5eed_cafen;
/** 999 fillers + the measured region = NR_IOBUS_DEVS, a full MMIO bus. */
export const FILLERS = 999;
/** The measured region sits in the middle of the fillers, so the lookup goes the whole way down. */
const MEASURED_SLOT = 500n;

export const RTT_OPS = 20000;
export const EXIT_PATH_OPS = 10000;
export const POSTED_OPS = 100000;
export const DOORBELL_OPS = 100000;

const GUEST_TIMED = 'the guest (hrtime around its access loop, in the vCPU thread)';

function warmup_of(ops: number): number {
  return Math.max(1, Math.round(ops / 10));
}

/** A one-vCPU case: each round is one KVM_RUN up to the guest's GUEST_SYNC. kvmFd: the case's own kernel-model. */
function guest_case(
  c: { name: string; unit: PerfCase['unit']; timing: string; note?: string },
  vm: KvmVm, vcpu: KvmVcpu, tasks: DeviceTask[], check: () => void, onExit?: (vcpu: KvmVcpu) => boolean, kvmFd?: number,
): PerfCase {
  return {
    ...c,
    round(r) {
      const g = perf_guest_next(vcpu, onExit);
      TEST_ASSERT(g !== undefined && g.round === r, `${c.name}: the guest reported round ${g?.round}, expected ${r}`);
      return { ops: g.ops, ns: Number(g.t1 - g.t0) };
    },
    async finish() {
      TEST_ASSERT(perf_guest_next(vcpu, onExit) === undefined, `${c.name}: the guest did not finish`);
      check();
      kvm_vm_free(vm);
      if (kvmFd !== undefined) close_kvm_dev(kvmFd);
      await Promise.all(tasks.map((t) => t.stop()));
    },
  };
}

/**
 * One testdev region at gpa on a new one-vCPU VM, plus `fillers` more regions (served by a second
 * task). With noPoll, on a kernel-model of its own (kvmFd) started with --ioregionfd-poll-ns 0, and a
 * task with poll_ns 0: both ends block at once, as before polling existed.
 */
function one_region_vm(
  guest: GuestCode, gpa: bigint, flags: number, fillers: number, noPoll = false,
): { vm: KvmVm; vcpu: KvmVcpu; tasks: DeviceTask[]; kvmFd?: number } {
  const kvmFd = noPoll ? open_kvm_dev_path({ ioregionfdPollNs: 0 }) : undefined;
  const [vm, [vcpu]] = vm_create_with_vcpus(1, guest, kvmFd);
  const dev = spawn_device_task({ device: 'testdev', vm, regions: [{ guest_paddr: gpa, memory_size: REGION_SIZE, flags }], pollNs: noPoll ? 0 : undefined });
  dev.closeChannelFds();
  const tasks = [dev];
  if (fillers > 0) {
    // They are never accessed, only looked past: one task serves them all over one channel.
    const regions: RegionSpec[] = [];
    for (let i = 0n; regions.length < fillers; i++) {
      const a = MMIO_BASE + i * STRIDE;
      if (a !== gpa) regions.push({ guest_paddr: a, memory_size: REGION_SIZE });
    }
    const filler = spawn_device_task({ device: 'testdev', vm, regions });
    filler.closeChannelFds();
    tasks.push(filler);
    const mmio = vm_ioregion_stats(vm).filter((r) => !r.pio).length;
    TEST_ASSERT(mmio === fillers + 1, `expected ${fillers + 1} MMIO regions, the VM has ${mmio}`);
  }
  return { vm, vcpu, tasks, kvmFd };
}

/**
 * ioregionfd_read_rtt (no options), ioregionfd_read_rtt_1000_regions (fillers FILLERS), with `cpu`
 * ioregionfd_read_rtt_placed (the vCPU thread and the device task both on that CPU), with noPoll
 * ioregionfd_read_rtt_no_poll (neither end spins before it blocks).
 */
export function ioregionfd_read_case(o: PerfOptions, name: string, opts: { fillers?: number; cpu?: number; noPoll?: boolean } = {}): PerfCase {
  const { fillers = 0, cpu, noPoll = false } = opts;
  const ops = perf_ops(o, RTT_OPS, 200);
  const gpa = MMIO_BASE + (fillers ? MEASURED_SLOT * STRIDE : 0n);
  const { vm, vcpu, tasks, kvmFd } = one_region_vm(guest_read_loop, gpa, 0, fillers, noPoll);
  if (cpu !== undefined) {
    vcpu.setAffinity([cpu]);
    // The task's main thread (tid = pid) is the one that serves the region's fd.
    const e = setAffinity(tasks[0].pid, [cpu]);
    TEST_ASSERT(e === 0, `${name}: sched_setaffinity(${tasks[0].pid}, CPU ${cpu}) failed: errno ${-e}`);
  }
  vcpu_args_set(vcpu, gpa, ops, o.reps, warmup_of(ops), PATTERN);
  const check = () => {
    const reads = vm_ioregion_stats(vm).find((r) => r.guestPaddr === gpa)?.reads ?? 0n;
    const expected = BigInt(warmup_of(ops) + ops * o.reps);
    TEST_ASSERT(reads === expected, `${name}: the region counted ${reads} reads, the guest did ${expected}`);
  };
  const note = fillers ? `${fillers + 1} regions on the MMIO bus (NR_IOBUS_DEVS), the measured one in the middle`
    : `one region, SOCK_SEQPACKET, testdev task${cpu === undefined ? '' : `, vCPU thread and task both on CPU ${cpu}`}` +
      `${noPoll ? ', polling off at both ends (--ioregionfd-poll-ns 0, poll_ns 0)' : ''}`;
  return guest_case({ name, unit: 'us', timing: GUEST_TIMED, note }, vm, vcpu, tasks, check, undefined, kvmFd);
}

/** ioregionfd_write_rtt (non-posted) or ioregionfd_posted_write_rate. */
export function ioregionfd_write_case(o: PerfOptions, name: string, posted: boolean): PerfCase {
  const ops = posted ? perf_ops(o, POSTED_OPS, 1000) : perf_ops(o, RTT_OPS, 200);
  const { vm, vcpu, tasks } = one_region_vm(guest_write_loop, MMIO_BASE, posted ? KVM_IOREGION_POSTED_WRITES : 0, 0);
  vcpu_args_set(vcpu, MMIO_BASE, ops, o.reps, warmup_of(ops));
  const check = () => {
    const st = vm_ioregion_stats(vm)[0];
    const writes = posted ? st.postedWrites : st.writes;
    const expected = BigInt(warmup_of(ops) + ops * o.reps);
    TEST_ASSERT(writes === expected && st.failures === 0n, `${name}: the region counted ${writes} writes (${st.failures} failures), the guest did ${expected}`);
  };
  const note = posted
    ? 'KVM_IOREGION_POSTED_WRITES; each round ends with a read the device answers only after consuming every write'
    : 'each round ends with one read';
  return guest_case({ name, unit: posted ? 'ops/s' : 'us', timing: GUEST_TIMED, note }, vm, vcpu, tasks, check);
}

/**
 * The VMM's MMIO handler of the classic path: forward the access to the device task as an ioregionfd
 * command (the wire format the device speaks) and complete it from the answer. Every access waits
 * for its answer: KVM_EXIT_MMIO gives a VMM no way to complete a write later.
 */
function mmio_forwarder(ch: DeviceChannel, base: bigint): (vcpu: KvmVcpu) => boolean {
  const cmd = new Uint8Array(IOREGIONFD_MSG_SIZE);
  const cmdView = new DataView(cmd.buffer);
  const resp = new Uint8Array(2 * IOREGIONFD_MSG_SIZE);
  const respView = new DataView(resp.buffer);
  return (vcpu) => {
    if (exit_reason(vcpu) !== KVM_EXIT_MMIO) return false;
    const m = run_mmio(vcpu);
    const value = m.isWrite ? le_value(m.data, m.len) : 0n;
    encodeCmdFields('v3', cmdView, 0, m.isWrite ? IOREGIONFD_CMD_WRITE : IOREGIONFD_CMD_READ, m.len, true, 0n, m.physAddr - base, value);
    const sent = writeRaw(ch.write_fd, cmd, IOREGIONFD_MSG_SIZE, true);
    if (sent !== IOREGIONFD_MSG_SIZE) TEST_FAIL(`forwarding to the device task: send returned ${sent}`);
    const got = readRaw(ch.read_fd, resp, resp.length);
    if (got !== IOREGIONFD_MSG_SIZE) TEST_FAIL(`the device task answered ${got} bytes`);
    if (!m.isWrite) le_store(m.data, m.len, decodeResp(respView, 0));
    return true;
  };
}

/** exit_path_read_rtt: the same guest as ioregionfd_read_rtt, with no region: this process forwards. */
export function exit_path_read_case(o: PerfOptions, name: string): PerfCase {
  const ops = perf_ops(o, EXIT_PATH_OPS, 200);
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_read_loop);
  // Not registered with KVM: we keep the task's socket and forward to it ourselves.
  const dev = spawn_device_task({ device: 'testdev', channels: ['seqpacket'] });
  vcpu_args_set(vcpu, MMIO_BASE, ops, o.reps, warmup_of(ops), PATTERN);
  return guest_case(
    { name, unit: 'us', timing: GUEST_TIMED, note: 'KVM_EXIT_MMIO -> VMM (this process) -> testdev task -> VMM -> KVM_RUN' },
    vm, vcpu, [dev], () => undefined, mmio_forwarder(dev.channels[0], MMIO_BASE),
  );
}

/**
 * mmio_exit_rtt: the bare exit round trip, no device anywhere: guest readl -> KVM_EXIT_MMIO -> this
 * process fills kvm_run.mmio.data (writes: nothing to do) -> KVM_RUN -> the guest continues.
 */
export function mmio_exit_case(o: PerfOptions, name: string): PerfCase {
  const ops = perf_ops(o, EXIT_PATH_OPS, 200);
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_read_loop);
  vcpu_args_set(vcpu, MMIO_BASE, ops, o.reps, warmup_of(ops), PATTERN);
  const complete = (v: KvmVcpu): boolean => {
    if (exit_reason(v) !== KVM_EXIT_MMIO) return false;
    const m = run_mmio(v);
    if (!m.isWrite) le_store(m.data, m.len, PATTERN);
    return true;
  };
  return guest_case(
    { name, unit: 'us', timing: GUEST_TIMED, note: 'KVM_EXIT_MMIO -> VMM (this process) completes from kvm_run -> KVM_RUN; no device' },
    vm, vcpu, [], () => undefined, complete,
  );
}

/** struct kvm_ioeventfd (api.rst 4.59): a wildcard (no datamatch) MMIO doorbell of `len` bytes. */
function kvm_ioeventfd_struct(addr: bigint, len: number, fd: number): Buffer {
  const b = Buffer.alloc(IOEVENTFD.SIZE);
  b.writeBigUInt64LE(0n, IOEVENTFD.datamatch);
  b.writeBigUInt64LE(addr, IOEVENTFD.addr);
  b.writeUInt32LE(len, IOEVENTFD.len);
  b.writeInt32LE(fd, IOEVENTFD.fd);
  b.writeUInt32LE(0, IOEVENTFD.flags);
  return b;
}

/** ioeventfd_write_rate, or the reason it cannot run here. */
export function ioeventfd_write_case(o: PerfOptions, name: string): PerfCase | string {
  if (kvm_check_cap(KVM_CAP_IOEVENTFD) === 0) return 'KVM_CAP_IOEVENTFD not available';
  const ops = perf_ops(o, DOORBELL_OPS, 1000);
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_doorbell_loop);
  // The doorbell device DMAs request + 1 to mailbox + 8 and its ring count to mailbox + 16.
  const mailbox = vm_alloc(vm, 24);
  const efd = eventfd();
  vm_ioctl(vm, KVM_IOEVENTFD, kvm_ioeventfd_struct(MMIO_BASE, 4, efd), 'KVM_IOEVENTFD');
  const dev = spawn_device_task({
    device: 'doorbell', channels: [], memory: vm, eventfds: { doorbell: efd }, config: { mailbox: `0x${mailbox.toString(16)}` },
  });
  closeQuietly(efd);
  vcpu_args_set(vcpu, MMIO_BASE, ops, o.reps, warmup_of(ops), mailbox + 16n);
  return guest_case(
    { name, unit: 'ops/s', timing: 'the guest (hrtime from its first ring until it sees the device has counted the last one)', note: 'KVM_IOEVENTFD, doorbell task reading the eventfd and counting by DMA' },
    vm, vcpu, [dev], () => undefined,
  );
}

/**
 * ioregionfd_read_rate_vcpus_N[_shared]: N vCPUs started together each round (one VMM thread, KVM_RUN
 * sent to all, then awaited); a round spans the first vCPU's start to the last one's end. With `split`
 * = [vcpuCpu, taskCpu], every vCPU thread runs on vcpuCpu and every task's serving thread on taskCpu
 * (the *_split cases): the device poller gets a CPU of its own, as vhost and SPDK deployments give theirs.
 */
export function ioregionfd_read_rate_case(o: PerfOptions, name: string, n: number, shared: boolean, split?: [number, number]): PerfCase {
  // The same total work per round whatever N, so rounds take about as long.
  const perVcpu = Math.max(1, Math.round(perf_ops(o, RTT_OPS, 200) / n));
  const [vm, vcpus] = vm_create_with_vcpus(n, guest_read_loop);
  const tasks: DeviceTask[] = [];
  const gpas: bigint[] = [];
  for (let i = 0; i < n; i++) {
    const gpa = MMIO_BASE + (shared ? 0n : BigInt(i) * STRIDE);
    if (!shared || i === 0) {
      const t = spawn_device_task({ device: 'testdev', vm, regions: [{ guest_paddr: gpa, memory_size: REGION_SIZE }] });
      t.closeChannelFds();
      tasks.push(t);
    }
    gpas.push(gpa);
  }
  vcpus.forEach((v, i) => vcpu_args_set(v, gpas[i], perVcpu, o.reps, warmup_of(perVcpu), PATTERN));
  if (split) {
    vcpus.forEach((v) => v.setAffinity([split[0]]));
    for (const t of tasks) {
      const e = setAffinity(t.pid, [split[1]]);
      TEST_ASSERT(e === 0, `${name}: sched_setaffinity(${t.pid}, CPU ${split[1]}) failed: errno ${-e}`);
    }
  }
  const placement = split ? `; vCPU threads on CPU ${split[0]}, task on CPU ${split[1]}` : '';
  return {
    name, unit: 'ops/s', timing: 'the guests (first vCPU start to last vCPU end of each round)',
    note: (shared ? `${n} vCPUs on one region and one fd (serialized by its read fd)` : `${n} vCPUs, each on its own region, fd and testdev task`) + placement,
    round(r) {
      vcpus.forEach(__vcpu_run_start);
      const got: GuestRound[] = [];
      for (const v of vcpus) {
        const res = __vcpu_run_wait(v);
        TEST_ASSERT(res.ret === 0 && exit_reason(v) === KVM_EXIT_IO, `${name}: vCPU ${v.id} KVM_RUN returned ${res.ret}, errno ${res.errno}: ${res.detail}`);
        const g = guest_round(get_ucall(v));
        TEST_ASSERT(g !== undefined && g.round === r, `${name}: vCPU ${v.id} reported round ${g?.round}, expected ${r}`);
        got.push(g);
      }
      const t0 = got.reduce((m, g) => (g.t0 < m ? g.t0 : m), got[0].t0);
      const t1 = got.reduce((m, g) => (g.t1 > m ? g.t1 : m), got[0].t1);
      return { ops: got.reduce((s, g) => s + g.ops, 0), ns: Number(t1 - t0) };
    },
    async finish() {
      for (const v of vcpus) TEST_ASSERT(perf_guest_next(v) === undefined, `${name}: vCPU ${v.id} did not finish`);
      const reads = vm_ioregion_stats(vm).reduce((s, r) => s + r.reads, 0n);
      const expected = BigInt(n * (warmup_of(perVcpu) + perVcpu * o.reps));
      TEST_ASSERT(reads === expected, `${name}: the regions counted ${reads} reads, the guests did ${expected}`);
      kvm_vm_free(vm);
      await Promise.all(tasks.map((t) => t.stop()));
    },
  };
}
