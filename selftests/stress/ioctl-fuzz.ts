// Campaign ioctl-fuzz: random and mutated control messages on the system, VM and vCPU fds of a
// kernel-model: real ioctl numbers with garbage structs and wrong kinds of fd in their fd fields,
// ioctls sent to the wrong kind of fd, empty messages, messages over 64 KiB, bytes that are not
// protobuf, encodings with bytes flipped, fds attached under numbers no field names, now and then
// garbage written into a vCPU's kvm_run page before its message. Each message
// must be answered within a bound, with an errno the rules allow for that input (the model answers
// what kvm.ko answers: kvm_ioctl_errno_test measures the same matrix one case at a time), and leave
// the fd serving and the kernel-model alive. Every few hundred messages the VMs are closed and the
// kernel-model's fds are compared with what it held before (leaks counted with the new fds listed).

import * as fs from 'node:fs';
import { Rng } from '../../device-task/sdk/conformance';
import { decodeRequest, encodeRequest, IoctlResult } from '../../proto/control';
import { E2BIG, EBADF, EBUSY, EEXIST, EFAULT, EINTR, EINVAL, ENOENT, ENOSPC, ENOTTY, ENXIO, errnoName } from '../../proto/errno';
import {
  ENABLE_CAP, IOC, IOC_WRITE, ioctlDir, ioctlSize, IOEVENTFD, IOREGION, IRQ_LEVEL, IRQFD, KVM_API_VERSION, KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT,
  KVM_CAP_EMU_IOREGIONFD_WIRE, KVM_CAP_IOREGIONFD, KVM_CAP_USER_MEMORY, KVM_CHECK_EXTENSION, KVM_CREATE_IRQCHIP, KVM_CREATE_VCPU,
  KVM_CREATE_VM, KVM_EMU_GET_IOREGION_STATS, KVM_EMU_SET_GUEST_ENTRY, KVM_EMU_SET_VCPU_AFFINITY, KVM_ENABLE_CAP, KVM_GET_API_VERSION, KVM_GET_REGS,
  KVM_GET_VCPU_MMAP_SIZE, KVM_IOEVENTFD, KVM_IRQ_LINE, KVM_IRQFD, KVM_RUN, KVM_SET_IOREGION, KVM_SET_REGS,
  KVM_SET_USER_MEMORY_REGION, MEMREGION, REGS_SIZE,
} from '../../proto/kvm-uapi';
import { closeQuietly, eventfd, MAX_MESSAGE, memfd, pipe, socketpair } from '../../proto/os';
import { Kvm } from '../../vmm/kvm';
import { Vcpu } from '../../vmm/vcpu';
import { Vm } from '../../vmm/vm';
import { Campaign, CampaignResult, emptyResult } from './campaign';
import { alive, boundedIoctl, childProcesses, fdsOf, newFds, Outcome, structFds, waitFor } from './observe';

/** Bound of one message's round trip: far above the ~0.1 ms it takes, below anything a person waits for. */
const REPLY_TIMEOUT_MS = 5000;
/** Messages between two leak checks (VMs closed, the kernel-model's fds compared). */
const EPOCH = 250;
/** How long a closed VM may take to release its fds (vCPU threads end asynchronously). */
const SETTLE_MS = 3000;
const MAX_EXAMPLES = 12;

type FdKind = 'system' | 'vm' | 'vcpu';

const NAMES: Record<number, string> = {
  [KVM_GET_API_VERSION]: 'KVM_GET_API_VERSION', [KVM_CREATE_VM]: 'KVM_CREATE_VM', [KVM_CHECK_EXTENSION]: 'KVM_CHECK_EXTENSION',
  [KVM_GET_VCPU_MMAP_SIZE]: 'KVM_GET_VCPU_MMAP_SIZE', [KVM_CREATE_VCPU]: 'KVM_CREATE_VCPU',
  [KVM_SET_USER_MEMORY_REGION]: 'KVM_SET_USER_MEMORY_REGION', [KVM_CREATE_IRQCHIP]: 'KVM_CREATE_IRQCHIP', [KVM_IRQ_LINE]: 'KVM_IRQ_LINE',
  [KVM_IRQFD]: 'KVM_IRQFD', [KVM_IOEVENTFD]: 'KVM_IOEVENTFD', [KVM_ENABLE_CAP]: 'KVM_ENABLE_CAP', [KVM_SET_IOREGION]: 'KVM_SET_IOREGION',
  [KVM_RUN]: 'KVM_RUN', [KVM_GET_REGS]: 'KVM_GET_REGS', [KVM_SET_REGS]: 'KVM_SET_REGS',
  [KVM_EMU_SET_GUEST_ENTRY]: 'KVM_EMU_SET_GUEST_ENTRY', [KVM_EMU_GET_IOREGION_STATS]: 'KVM_EMU_GET_IOREGION_STATS',
  [KVM_EMU_SET_VCPU_AFFINITY]: 'KVM_EMU_SET_VCPU_AFFINITY',
};
const name = (request: number) => NAMES[request] ?? `ioctl 0x${request.toString(16)}`;

/** The ioctls each kind of fd serves. */
const IOCTLS: Record<FdKind, number[]> = {
  system: [KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE],
  vm: [KVM_CREATE_VCPU, KVM_SET_USER_MEMORY_REGION, KVM_CHECK_EXTENSION, KVM_ENABLE_CAP, KVM_CREATE_IRQCHIP, KVM_IRQ_LINE, KVM_IRQFD,
    KVM_IOEVENTFD, KVM_SET_IOREGION, KVM_EMU_GET_IOREGION_STATS],
  vcpu: [KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_EMU_SET_GUEST_ENTRY, KVM_EMU_SET_VCPU_AFFINITY],
};
const ALL_IOCTLS = [...new Set(Object.values(IOCTLS).flat())];

/** What an ioctl may answer: these errnos, and success when `ok`. */
interface Allowed {
  errnos: number[];
  ok: boolean;
}

const FAILS = (...errnos: number[]): Allowed => ({ errnos, ok: false });
const MAY = (...errnos: number[]): Allowed => ({ errnos, ok: true });

/**
 * The rules: what an ioctl on this kind of fd may answer for a decoded request. Unknown ioctls are
 * EINVAL on the system and vCPU fds and ENOTTY on a VM fd; a VM ioctl whose struct is shorter than
 * its number says faults (EFAULT) before anything looks at it.
 */
export function allowed(kind: FdKind, request: number, dataLength: number): Allowed {
  switch (kind) {
    case 'system':
      switch (request) {
        case KVM_CHECK_EXTENSION: return MAY();
        case KVM_GET_API_VERSION: case KVM_CREATE_VM: case KVM_GET_VCPU_MMAP_SIZE: return MAY(EINVAL);
        default: return FAILS(EINVAL);
      }
    case 'vm':
      if (!IOCTLS.vm.includes(request)) return FAILS(ENOTTY);
      if (ioctlDir(request) & IOC_WRITE && dataLength < ioctlSize(request)) return FAILS(EFAULT);
      switch (request) {
        case KVM_CHECK_EXTENSION: case KVM_EMU_GET_IOREGION_STATS: return MAY();
        case KVM_CREATE_VCPU: case KVM_SET_USER_MEMORY_REGION: case KVM_CREATE_IRQCHIP: return MAY(EINVAL, EEXIST);
        case KVM_ENABLE_CAP: return MAY(EINVAL);
        case KVM_IRQ_LINE: return MAY(ENXIO);
        case KVM_IRQFD: return MAY(EINVAL, EBADF, EBUSY);
        default: return MAY(EINVAL, EBADF, EEXIST, ENOENT, ENOSPC); // KVM_IOEVENTFD, KVM_SET_IOREGION
      }
    case 'vcpu':
      switch (request) {
        case KVM_RUN: return MAY(EINTR);
        case KVM_GET_REGS: return MAY();
        case KVM_SET_REGS: return dataLength < REGS_SIZE ? FAILS(EFAULT) : MAY();
        case KVM_EMU_SET_GUEST_ENTRY: return MAY(EINVAL);
        // A mask naming an online CPU pins the thread; an empty, offline or over-long one is EINVAL.
        case KVM_EMU_SET_VCPU_AFFINITY: return MAY(EINVAL);
        default: return FAILS(EINVAL);
      }
  }
}

/** One fuzzed message: its bytes, the fds that travel with it, and what the rules allow. */
interface Message {
  what: string;
  bytes: Uint8Array;
  attach: number[];
  allowed: Allowed;
}

const PROBES: Record<FdKind, Uint8Array> = {
  system: encodeRequest({ request: KVM_GET_API_VERSION }),
  vm: encodeRequest({ request: KVM_CHECK_EXTENSION, arg: BigInt(KVM_CAP_USER_MEMORY) }),
  vcpu: encodeRequest({ request: KVM_GET_REGS }),
};

/** A kernel-model with two VMs of one vCPU each: the fds the messages go to and the fds they name. */
class Target {
  readonly kvm: Kvm;
  vms: Vm[] = [];
  vcpus: Vcpu[] = [];
  constructor() {
    this.kvm = Kvm.open();
  }

  openVms(): void {
    for (let i = 0; i < 2; i++) {
      const vm = this.kvm.createVm();
      this.vms.push(vm);
      const vcpu = vm.createVcpu(0);
      // A vCPU's thread starts at its first ioctl; start it now, so the leak baseline includes it.
      vcpu.getRegs();
      this.vcpus.push(vcpu);
    }
  }

  closeVms(): void {
    this.vms.forEach((vm) => vm.close());
    this.vms = [];
    this.vcpus = [];
  }

  close(): void {
    this.closeVms();
    closeQuietly(this.kvm.fd);
  }

  fdOf(kind: FdKind, which: number): number {
    if (kind === 'system') return this.kvm.fd;
    return kind === 'vm' ? this.vms[which].fd : this.vcpus[which].fd;
  }

  /** A cheap ioctl the fd must still answer correctly: the fd is still being served. */
  static probe(kind: FdKind): { request: number; message: Uint8Array; check: (r: IoctlResult) => boolean } {
    if (kind === 'system') return { request: KVM_GET_API_VERSION, message: PROBES.system, check: (r) => r.ret === KVM_API_VERSION };
    if (kind === 'vm') return { request: KVM_CHECK_EXTENSION, message: PROBES.vm, check: (r) => r.ret === 1 };
    return { request: KVM_GET_REGS, message: PROBES.vcpu, check: (r) => r.ret === 0 && r.data.length === REGS_SIZE };
  }
}

/** fds of ours that messages name: every kind a struct's fd field could be handed. */
function fdPool(): { fds: number[]; close: () => void } {
  const [pr, pw] = pipe();
  const [sa, sb] = socketpair('seqpacket');
  const [ta, tb] = socketpair('stream');
  const ro = fs.openSync(__filename, 'r');
  const fds = [eventfd(0), eventfd(0), pr, pw, sa, sb, ta, tb, memfd('fuzz-memory', 16 * 4096), ro];
  return { fds, close: () => fds.forEach(closeQuietly) };
}

class Fuzzer {
  constructor(readonly rng: Rng, private readonly pool: number[]) {}

  pick<T>(xs: readonly T[]): T {
    return xs[this.rng.below(xs.length)];
  }

  chance(p: number): boolean {
    return this.rng.u32() / 2 ** 32 < p;
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.rng.below(256);
    return b;
  }

  u64(): bigint {
    return this.pick([0n, 1n, 8n, 0x1000n, 0xfffn, 0x10000n, 0xfee00000n, BigInt(this.rng.below(64)) << 12n, (1n << 63n), (1n << 64n) - 1n,
      (1n << 64n) - 0x1000n, this.rng.u64(), BigInt(this.rng.below(17))]);
  }

  u32(): number {
    return this.pick([0, 1, 2, 3, 4, 7, 8, 16, 0xff, 0xffff, 0xffffffff, 0x80000000, this.rng.u32(), 1 << this.rng.below(32)]) >>> 0;
  }

  /** An fd number for a struct field: one of ours of any kind, a KVM fd, -1, or a number never open. */
  fd(kvmFds: number[]): number {
    return this.pick([...this.pool, ...kvmFds, -1, 1_000_000, 0]);
  }

  /** A struct for `request`, its fields filled with edge values and fds of every kind. */
  struct(request: number, kvmFds: number[]): Buffer {
    const size = ioctlSize(request);
    const b = Buffer.alloc(size);
    const u64 = (off: number) => b.writeBigUInt64LE(this.u64(), off);
    const u32 = (off: number) => b.writeUInt32LE(this.u32() >>> 0, off);
    const fd = (off: number) => b.writeInt32LE(this.fd(kvmFds), off);
    switch (request) {
      case KVM_SET_USER_MEMORY_REGION:
        b.writeUInt32LE(this.pick([0, 1, 2, this.u32()]), MEMREGION.slot);
        b.writeUInt32LE(this.pick([0, 1, 2, 3, this.u32()]), MEMREGION.flags);
        u64(MEMREGION.guest_phys_addr); u64(MEMREGION.memory_size); u64(MEMREGION.userspace_addr);
        break;
      case KVM_IOEVENTFD:
        u64(IOEVENTFD.datamatch); u64(IOEVENTFD.addr); fd(IOEVENTFD.fd);
        b.writeUInt32LE(this.pick([0, 1, 2, 4, 8, this.u32()]), IOEVENTFD.len);
        b.writeUInt32LE(this.pick([0, 1, 2, 4, 5, this.rng.below(32), this.u32()]), IOEVENTFD.flags);
        break;
      case KVM_SET_IOREGION:
        u64(IOREGION.guest_paddr); u64(IOREGION.memory_size); u64(IOREGION.user_data); fd(IOREGION.read_fd); fd(IOREGION.write_fd);
        b.writeUInt32LE(this.pick([0, 1, 2, 3, 4, 6, this.rng.below(16), this.u32()]), IOREGION.flags);
        break;
      case KVM_IRQFD:
        fd(IRQFD.fd); fd(IRQFD.resamplefd);
        b.writeUInt32LE(this.pick([0, 1, 5, 23, 24, this.u32()]), IRQFD.gsi);
        b.writeUInt32LE(this.pick([0, 1, 2, 3, this.u32()]), IRQFD.flags);
        break;
      case KVM_IRQ_LINE:
        u32(IRQ_LEVEL.irq); u32(IRQ_LEVEL.level);
        break;
      case KVM_ENABLE_CAP:
        b.writeUInt32LE(this.pick([KVM_CAP_EMU_IOREGIONFD_WIRE, KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT, KVM_CAP_IOREGIONFD, this.u32()]), ENABLE_CAP.cap);
        b.writeUInt32LE(this.pick([0, this.u32()]), ENABLE_CAP.flags);
        for (let i = 0; i < 4; i++) b.writeBigUInt64LE(this.pick([0n, 1n, 3n, this.u64()]), ENABLE_CAP.args + 8 * i);
        break;
      default:
        this.bytes(size).copy(b);
    }
    return b;
  }

  /** A scalar argument for an _IO ioctl. */
  arg(): bigint {
    return this.pick([0n, 1n, 2n, BigInt(this.rng.below(300)), 4095n, 4096n, (1n << 32n) + 3n, (1n << 64n) - 1n, this.rng.u64()]);
  }
}

/** Decode bytes as the server will, to know which rules apply to a mutated or raw message. */
function rulesFor(kind: FdKind, bytes: Uint8Array): Allowed {
  if (bytes.length > MAX_MESSAGE) return FAILS(E2BIG);
  try {
    const req = decodeRequest(bytes);
    return allowed(kind, req.request, req.data.length);
  } catch {
    return FAILS(EINVAL);
  }
}

/** Build one fuzzed message for an fd of `kind`. */
function makeMessage(f: Fuzzer, kind: FdKind, kvmFds: number[], open: Set<number>): Message {
  const roll = f.rng.below(100);
  if (roll < 5) return { what: 'an empty message', bytes: Buffer.alloc(0), attach: [], allowed: rulesFor(kind, Buffer.alloc(0)) };
  if (roll < 8) {
    const n = MAX_MESSAGE + 1 + f.rng.below(8192);
    return { what: `a ${n}-byte message`, bytes: f.bytes(n), attach: [], allowed: FAILS(E2BIG) };
  }
  if (roll < 20) {
    const bytes = f.bytes(1 + f.rng.below(200));
    return { what: `${bytes.length} random bytes`, bytes, attach: [], allowed: rulesFor(kind, bytes) };
  }
  // A real ioctl: usually this fd's, sometimes another kind's; or a random number.
  let request: number;
  const r2 = f.rng.below(100);
  if (r2 < 65) request = f.pick(IOCTLS[kind]);
  else if (r2 < 90) request = f.pick(ALL_IOCTLS);
  else if (r2 < 95) request = IOC(f.rng.below(4), 0xae, f.rng.below(256), f.rng.below(0x4000));
  else request = f.rng.u32();
  const size = ioctlSize(request);
  let data: Buffer | undefined;
  let arg = 0n;
  let shape: string;
  if (ioctlDir(request) & IOC_WRITE || request === KVM_EMU_SET_GUEST_ENTRY) {
    const full = request === KVM_EMU_SET_GUEST_ENTRY ? f.bytes(f.rng.below(64)) : f.struct(request, kvmFds);
    const s = f.rng.below(10);
    if (s < 7) data = full;
    else if (s < 8) data = full.subarray(0, f.rng.below(Math.max(1, full.length)));
    else if (s < 9) data = Buffer.concat([full, f.bytes(1 + f.rng.below(64))]);
    else data = Buffer.alloc(0);
    shape = `a ${data.length}-byte struct`;
  } else {
    arg = f.arg();
    if (f.chance(0.1)) data = f.bytes(f.rng.below(size + 32));
    shape = `arg 0x${arg.toString(16)}${data ? ` and ${data.length} data bytes` : ''}`;
  }
  let attach = data ? structFds(request, data, open) : [];
  if (request === KVM_SET_USER_MEMORY_REGION && f.chance(0.8)) attach.push(f.pick([...open]));
  let fdNumbers = attach;
  // Fds under numbers no field names, or numbers with no fd.
  if (f.chance(0.05)) {
    attach = [...new Set([...attach, f.pick([...open]), f.pick([...open])])];
    fdNumbers = attach.map(() => f.fd(kvmFds));
  }
  let bytes: Uint8Array = encodeRequest({ request, arg, data, fdNumbers });
  let what = `${name(request)} with ${shape}${attach.length ? `, fds [${attach.join(', ')}] as [${fdNumbers.join(', ')}]` : ''}`;
  if (f.chance(0.12)) {
    // A valid encoding with bytes flipped, cut short or extended: the server decodes whatever it is.
    const b = Buffer.from(bytes);
    const m = f.rng.below(3);
    if (m === 0 && b.length) for (let i = 0; i < 1 + f.rng.below(4); i++) b[f.rng.below(b.length)] ^= 1 << f.rng.below(8);
    bytes = m === 0 ? b : m === 1 ? b.subarray(0, f.rng.below(b.length + 1)) : Buffer.concat([b, f.bytes(1 + f.rng.below(16))]);
    what = `${what}, encoding mutated (${['bits flipped', 'cut', 'extended'][m]})`;
    return { what, bytes, attach, allowed: rulesFor(kind, bytes) };
  }
  return { what, bytes, attach, allowed: allowed(kind, request, data?.length ?? 0) };
}

function describe(o: Outcome): string {
  if (o.kind !== 'reply') return o.what;
  return o.r.ret < 0 ? `${errnoName(o.r.errno)}${o.r.detail ? ` (${o.r.detail})` : ''}` : `ret ${o.r.ret}`;
}

async function run({ iterations, seed, progress }: { iterations: number; seed: number; progress(line: string): void }): Promise<CampaignResult> {
  const result = emptyResult();
  const rng = new Rng(seed);
  const pool = fdPool();
  const fuzzer = new Fuzzer(rng, pool.fds);
  const example = (text: string) => {
    if (result.examples.length < MAX_EXAMPLES) result.examples.push(text);
  };
  let errnoReplies = 0;
  let okReplies = 0;
  let leakChecks = 0;
  let restarts = 0;
  let scribbles = 0;
  let leaked = new Set<string>();
  const started = Date.now();
  let lastProgress = started;

  let target = new Target();
  let baseline: Map<string, string> | undefined;
  /** Close the VMs, wait for the kernel-model to release their fds, and compare with the baseline. */
  const settle = (): Map<string, string> | undefined => {
    target.closeVms();
    let now = fdsOf(target.kvm.pid);
    if (baseline) {
      const limit = baseline.size;
      waitFor(() => (now = fdsOf(target.kvm.pid)) === undefined || now.size <= limit, SETTLE_MS);
    } else {
      // No baseline yet: wait until the count has not changed for a while.
      let last = -1;
      let since = Date.now();
      waitFor(() => {
        now = fdsOf(target.kvm.pid);
        if (now?.size !== last) [last, since] = [now?.size ?? -1, Date.now()];
        return Date.now() - since >= 300;
      }, SETTLE_MS);
    }
    return now;
  };
  const fresh = (): void => {
    target.openVms();
    baseline = undefined;
    baseline = settle();
    target.openVms();
  };
  const restart = (): void => {
    target.close();
    restarts++;
    target = new Target();
    fresh();
  };
  fresh();

  for (let round = 1; round <= iterations; round++) {
    result.rounds = round;
    const kind = fuzzer.pick<FdKind>(['system', 'vm', 'vm', 'vcpu']);
    const which = rng.below(2);
    const fd = target.fdOf(kind, which);
    const kvmFds = [target.kvm.fd, ...target.vms.map((v) => v.fd), ...target.vcpus.flatMap((v) => [v.fd, v.runFd, v.kickFd])];
    const open = new Set([...pool.fds, ...kvmFds]);
    let msg = makeMessage(fuzzer, kind, kvmFds, open);
    if (kind === 'vcpu' && fuzzer.chance(0.05)) {
      // kvm_run is the VMM's to write: no byte of it may wedge the vCPU or its next KVM_RUN.
      const page = target.vcpus[which].kvmRunBytes;
      const at = fuzzer.pick([0, 1, 3072, 3073, rng.below(page.length)]);
      page.set(fuzzer.bytes(Math.min(page.length - at, 1 + rng.below(64))), at);
      scribbles++;
      msg = { ...msg, what: `${msg.what}, after garbage at kvm_run + ${at}` };
    }
    const where = `seed ${seed} round ${round}, ${kind} fd`;
    const o = boundedIoctl(fd, msg.bytes, msg.attach, REPLY_TIMEOUT_MS);
    if (o.kind === 'reply') o.r.fds.forEach(closeQuietly);
    let broken = false;
    if (!alive(target.kvm.pid)) {
      result.kernelModelExits++;
      example(`${where}: the kernel-model exited after ${msg.what} (${describe(o)})`);
      broken = true;
    } else if (o.kind !== 'reply') {
      result.hangs++;
      example(`${where}: ${msg.what}: ${o.what}`);
      broken = true;
    } else {
      const r = o.r;
      if (r.ret >= 0) okReplies++;
      else errnoReplies++;
      const fine = r.ret >= 0 ? msg.allowed.ok : msg.allowed.errnos.includes(r.errno);
      if (!fine) {
        result.undefinedErrnos++;
        example(`${where}: ${msg.what}: got ${describe(o)}, allowed ${[...msg.allowed.errnos.map(errnoName), ...(msg.allowed.ok ? ['success'] : [])].join('/')}`);
      }
      const p = Target.probe(kind);
      const po = boundedIoctl(fd, p.message, [], REPLY_TIMEOUT_MS);
      if (po.kind === 'reply') po.r.fds.forEach(closeQuietly);
      if (po.kind !== 'reply' || !p.check(po.r)) {
        if (po.kind === 'hang') result.hangs++;
        else if (!alive(target.kvm.pid)) result.kernelModelExits++;
        else result.undefinedErrnos++;
        example(`${where}: after ${msg.what} (${describe(o)}), the fd no longer serves ${name(p.request)}: ${describe(po)}`);
        broken = true;
      }
    }
    if (broken) {
      restart();
    } else if (round % EPOCH === 0 || round === iterations) {
      const now = settle();
      if (now && baseline) {
        leakChecks++;
        // Counted by number: an fd closed and another opened in its place is no leak.
        const excess = now.size - baseline.size;
        const extra = newFds(baseline, now);
        if (excess > result.leakedFds) {
          result.leakedFds = excess;
          const added = extra.filter((l) => !leaked.has(l));
          example(`${where}: after rounds up to ${round}, the kernel-model holds ${excess} fds more than before: ${added.slice(0, 6).join(', ')}`);
          leaked = new Set(extra);
        }
      }
      if (round < iterations) target.openVms();
    }
    if (Date.now() - lastProgress >= 2000) {
      lastProgress = Date.now();
      progress(`round ${round}/${iterations}: hangs ${result.hangs}, kernel-model exits ${result.kernelModelExits}, undefined errnos ${result.undefinedErrnos}, leaked fds ${result.leakedFds}`);
    }
  }

  target.close();
  // The kernel-model ends when its system fd closes: nothing of it (or anything else) may remain.
  const pid = target.kvm.pid;
  waitFor(() => !alive(pid), SETTLE_MS);
  const left = childProcesses().filter((p) => alive(p));
  result.leakedProcesses = left.length;
  if (left.length) example(`seed ${seed}: processes left after the last system fd closed: ${left.join(', ')}`);
  pool.close();
  const seconds = (Date.now() - started) / 1000;
  result.figures = {
    messages: result.rounds, errno_replies: errnoReplies, ok_replies: okReplies, leak_checks: leakChecks,
    kernel_model_restarts: restarts, kvm_run_scribbles: scribbles, messages_per_s: Math.round(result.rounds / seconds),
  };
  return result;
}

export const ioctlFuzz: Campaign = {
  name: 'ioctl-fuzz',
  description: 'random and mutated ioctl messages on system, VM and vCPU fds (bad structs, wrong fd kinds, empty, >64 KiB, not protobuf)',
  iterations: 20_000,
  shortIterations: 500,
  run,
};
