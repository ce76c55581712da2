// Campaign ioctl-model: random sequences of KVM_SET_IOREGION, KVM_IOEVENTFD, KVM_SET_USER_MEMORY_REGION
// and KVM_IRQFD (assign and deassign, overlaps, bad flags, bad sizes, bad fds) on a fresh VM each,
// every answer compared with a small reference model of the rules (docs/ioregionfd.md for ioregions;
// kvm.ko's rules for the rest, as the model implements them). Interleaved with the VMM resizing its
// memfds, which shows whether a request had side effects it should not have had (a memfd sealed
// against shrinking by a request that was refused). A mismatch counts as an undefined errno, with the
// sequence up to it as the example; the sequence then ends (the model no longer knows the state).

import * as fs from 'node:fs';
import { Rng } from '../../device-task/sdk/conformance';
import { encodeRequest } from '../../proto/control';
import { EBADF, EBUSY, EEXIST, EINVAL, ENOENT, EPERM, errnoName } from '../../proto/errno';
import {
  KVM_IOEVENTFD, KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_IOEVENTFD_FLAG_PIO,
  KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY, KVM_IOEVENTFD_VALID_FLAG_MASK, KVM_IOREGION_DEASSIGN, KVM_IOREGION_PIO, KVM_IOREGION_POSTED_WRITES,
  KVM_IOREGION_VALID_FLAG_MASK, KVM_IRQFD, KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_MAX_NR_PAGES,
  KVM_MEM_READONLY, KVM_SET_IOREGION, KVM_SET_USER_MEMORY_REGION, KVM_USER_MEM_SLOTS, PAGE_SIZE,
} from '../../proto/kvm-uapi';
import { closeQuietly, eventfd, memfd, pipe, resizeFile, socketpair } from '../../proto/os';
import { Kvm } from '../../vmm/kvm';
import { kvmIoeventfd, kvmIoregion, kvmIrqfd, kvmUserspaceMemoryRegion } from '../../vmm/structs';
import { Campaign, CampaignOptions, CampaignResult, emptyResult } from './campaign';
import { alive, boundedIoctl, childProcesses, fdsOf, newFds, structFds, waitFor } from './observe';

const REPLY_TIMEOUT_MS = 5000;
/** Sequences between two leak checks. */
const EPOCH = 100;
const SETTLE_MS = 3000;
const MAX_OPS = 30;
const MAX_EXAMPLES = 12;
const U64_MAX = (1n << 64n) - 1n;
const PAGE = BigInt(PAGE_SIZE);
/** A length-0 ioeventfd or size-0 ioregion covers 8 bytes for overlap checks (docs/ioregionfd.md). */
const ZERO_FOOTPRINT = 8n;

// ---- the fds a sequence uses --------------------------------------------------------------------

/** What a sequence's fd is to the rules. */
interface FdInfo {
  fd: number;
  name: string;
  kind: 'eventfd' | 'pipe' | 'socket' | 'memfd' | 'control' | 'none';
  /** For a memfd: its file (a read-only reopen shares it), and whether this fd may write. */
  file?: MemFile;
  writable?: boolean;
}

interface MemFile {
  name: string;
  size: bigint;
  /** Sealed against shrinking: only a slot that was accepted may have caused it. */
  sealed: boolean;
}

/** A sequence's own fds, fresh each time, so nothing a previous VM did can reach this one. */
function sequenceFds(vmFd: number, kvmFd: number): { fds: FdInfo[]; files: Map<FdInfo, MemFile>; close: () => void } {
  const [pr, pw] = pipe();
  const [sa, sb] = socketpair('seqpacket');
  const [ta, tb] = socketpair('stream');
  const A: MemFile = { name: 'memfd A', size: 0x10000n, sealed: false };
  const B: MemFile = { name: 'memfd B', size: 0x4000n, sealed: false };
  const a = memfd('ioctl-model-A', A.size);
  const b = memfd('ioctl-model-B', B.size);
  const aro = fs.openSync(`/proc/self/fd/${a}`, 'r');
  const fds: FdInfo[] = [
    { fd: eventfd(0), name: 'eventfd 1', kind: 'eventfd' },
    { fd: eventfd(0), name: 'eventfd 2', kind: 'eventfd' },
    { fd: eventfd(0), name: 'eventfd 3', kind: 'eventfd' },
    { fd: pr, name: 'pipe read end', kind: 'pipe' },
    { fd: pw, name: 'pipe write end', kind: 'pipe' },
    { fd: sa, name: 'seqpacket socket', kind: 'socket' },
    { fd: ta, name: 'stream socket', kind: 'socket' },
    { fd: a, name: 'memfd A', kind: 'memfd', file: A, writable: true },
    { fd: b, name: 'memfd B', kind: 'memfd', file: B, writable: true },
    { fd: aro, name: 'memfd A read-only', kind: 'memfd', file: A, writable: false },
    { fd: vmFd, name: 'the VM fd', kind: 'control' },
    { fd: kvmFd, name: 'the system fd', kind: 'control' },
    { fd: -1, name: 'fd -1', kind: 'none' },
  ];
  const files = new Map<FdInfo, MemFile>();
  for (const f of fds) if (f.file) files.set(f, f.file);
  return { fds, files, close: () => [pr, pw, sa, sb, ta, tb, a, b, aro].forEach(closeQuietly) };
}

// ---- the reference model ------------------------------------------------------------------------

interface Slot { id: number; flags: number; gpa: bigint; size: bigint; offset: bigint; fd: FdInfo }
interface Region { pio: boolean; addr: bigint; size: bigint }
interface Ioeventfd { bus: 'mmio' | 'pio' | 'ccw'; addr: bigint; len: number; wildcard: boolean; datamatch: bigint; fd: FdInfo }
interface Irqfd { gsi: number; fd: FdInfo }

/** The result the rules give: 0 or an errno, and how the state changes if it is 0. */
type Verdict = { errno: number; apply?: () => void };
const ok = (apply?: () => void): Verdict => ({ errno: 0, apply });
const err = (errno: number): Verdict => ({ errno });

const overlaps = (a: bigint, alen: bigint, b: bigint, blen: bigint) =>
  a < b + (blen || ZERO_FOOTPRINT) && b < a + (alen || ZERO_FOOTPRINT);

class Model {
  slots = new Map<number, Slot>();
  regions: Region[] = [];
  ioeventfds: Ioeventfd[] = [];
  irqfds: Irqfd[] = [];
  constructor(readonly irqchip: boolean) {}

  /** An fd the kernel-model must resolve: EBADF when none came, EINVAL when it is not an eventfd. */
  private eventfd(f: FdInfo): number {
    if (f.kind === 'none') return EBADF;
    return f.kind === 'eventfd' ? 0 : EINVAL;
  }

  memoryRegion(slot: number, flags: number, gpa: bigint, size: bigint, offset: bigint, f: FdInfo): Verdict {
    const id = slot & 0xffff;
    if (id >= KVM_USER_MEM_SLOTS) return err(EINVAL);
    if (flags & ~(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY)) return err(EINVAL);
    if (size % PAGE || gpa % PAGE || offset % PAGE) return err(EINVAL);
    if (size) {
      const file = f.file;
      if (!file) return err(EINVAL);
      if (offset + size > file.size) return err(EINVAL);
      if (!f.writable && !(flags & KVM_MEM_READONLY)) return err(EINVAL);
      // The model seals a new backing against shrinking; a read-only fd cannot add a seal.
      if (!file.sealed && !f.writable) return err(EINVAL);
    }
    if (slot >>> 16) return err(EINVAL);
    if (gpa + size > U64_MAX) return err(EINVAL);
    if (size / PAGE > BigInt(KVM_MEM_MAX_NR_PAGES)) return err(EINVAL);
    const old = this.slots.get(id);
    if (!size) return old ? ok(() => this.slots.delete(id)) : err(EINVAL);
    if (old && (offset !== old.offset || f !== old.fd || size !== old.size || (flags ^ old.flags) & KVM_MEM_READONLY)) return err(EINVAL);
    if (old && gpa === old.gpa) return ok(() => (old.flags = flags));
    for (const s of this.slots.values()) if (s.id !== id && gpa < s.gpa + s.size && s.gpa < gpa + size) return err(EEXIST);
    return ok(() => {
      this.slots.set(id, { id, flags, gpa, size, offset, fd: f });
      f.file!.sealed = true;
    });
  }

  ioregion(addr: bigint, size: bigint, flags: number, read: FdInfo, write: FdInfo): Verdict {
    const pio = (flags & KVM_IOREGION_PIO) !== 0;
    if (flags & ~KVM_IOREGION_VALID_FLAG_MASK) return err(EINVAL);
    if (flags & KVM_IOREGION_DEASSIGN) {
      const i = this.regions.findIndex((r) => r.pio === pio && r.addr === addr && r.size === size);
      return i < 0 ? err(ENOENT) : ok(() => this.regions.splice(i, 1));
    }
    if (addr + size > U64_MAX) return err(EINVAL);
    if (!size && !(flags & KVM_IOREGION_POSTED_WRITES)) return err(EINVAL);
    if (write.kind === 'none' || (size && read.kind === 'none')) return err(EBADF);
    if (write.kind === 'control' || (size && read.kind === 'control')) return err(EINVAL);
    const bus = pio ? 'pio' : 'mmio';
    if (this.regions.some((r) => r.pio === pio && overlaps(addr, size, r.addr, r.size))) return err(EEXIST);
    if (this.ioeventfds.some((e) => e.bus === bus && overlaps(addr, size, e.addr, BigInt(e.len)))) return err(EEXIST);
    return ok(() => this.regions.push({ pio, addr, size }));
  }

  ioeventfd(addr: bigint, len: number, flags: number, datamatch: bigint, f: FdInfo): Verdict {
    const bus = flags & KVM_IOEVENTFD_FLAG_PIO ? 'pio' : flags & KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY ? 'ccw' : 'mmio';
    const wildcard = !(flags & KVM_IOEVENTFD_FLAG_DATAMATCH);
    if (flags & KVM_IOEVENTFD_FLAG_DEASSIGN) {
      const e = this.eventfd(f);
      if (e) return err(e);
      const i = this.ioeventfds.findIndex((q) => q.bus === bus && q.addr === addr && q.len === len && q.wildcard === wildcard &&
        (wildcard || q.datamatch === datamatch) && q.fd === f);
      return i < 0 ? err(ENOENT) : ok(() => this.ioeventfds.splice(i, 1));
    }
    if (![0, 1, 2, 4, 8].includes(len)) return err(EINVAL);
    if (addr + BigInt(len) > U64_MAX) return err(EINVAL);
    if (flags & ~KVM_IOEVENTFD_VALID_FLAG_MASK) return err(EINVAL);
    if (!len && !wildcard) return err(EINVAL);
    const e = this.eventfd(f);
    if (e) return err(e);
    const collides = (q: Ioeventfd) => q.bus === bus && q.addr === addr &&
      (!len || !q.len || (q.len === len && (wildcard || q.wildcard || q.datamatch === datamatch)));
    if (this.ioeventfds.some(collides)) return err(EEXIST);
    if (bus !== 'ccw' && this.regions.some((r) => r.pio === (bus === 'pio') && overlaps(addr, BigInt(len), r.addr, r.size))) return err(EEXIST);
    return ok(() => this.ioeventfds.push({ bus, addr, len, wildcard, datamatch: wildcard ? 0n : datamatch, fd: f }));
  }

  irqfd(gsi: number, flags: number, f: FdInfo, resample: FdInfo): Verdict {
    if (flags & ~(KVM_IRQFD_FLAG_DEASSIGN | KVM_IRQFD_FLAG_RESAMPLE)) return err(EINVAL);
    if (flags & KVM_IRQFD_FLAG_DEASSIGN) {
      const e = this.eventfd(f);
      return e ? err(e) : ok(() => (this.irqfds = this.irqfds.filter((i) => !(i.gsi === gsi && i.fd === f))));
    }
    if (!this.irqchip) return err(EINVAL);
    const e = this.eventfd(f);
    if (e) return err(e);
    if (flags & KVM_IRQFD_FLAG_RESAMPLE && resample !== f) {
      const r = this.eventfd(resample);
      if (r) return err(r);
    }
    if (this.irqfds.some((i) => i.fd === f)) return err(EBUSY);
    return ok(() => this.irqfds.push({ gsi, fd: f }));
  }

  /** The VMM's ftruncate of its own memfd: only a seal can refuse it (EPERM for a shrink). */
  resize(file: MemFile, size: bigint): Verdict {
    if (size < file.size && file.sealed) return err(EPERM);
    return ok(() => (file.size = size));
  }
}

// ---- random operations --------------------------------------------------------------------------

interface Op {
  what: string;
  /** Ask the rules (before doing it). */
  expect: (m: Model) => Verdict;
  /** Do it: 0 or an errno, or why there was no answer (no reply in time, the kernel-model gone). */
  perform: () => number | { failure: string };
}

class Generator {
  constructor(readonly rng: Rng) {}

  pick<T>(xs: readonly T[]): T {
    return xs[this.rng.below(xs.length)];
  }

  chance(p: number): boolean {
    return this.rng.below(1000) < p * 1000;
  }

  /** Addresses that meet and overlap often, and a few at the top of the address space. */
  addr(): bigint {
    return this.pick([0x1000n, 0x1000n, 0x1004n, 0x1008n, 0x2000n, 0x2ff8n, 0x3000n, 0x10000n, 0n, U64_MAX - 7n, U64_MAX - 0xfffn]);
  }
}

const hex = (v: bigint | number) => `0x${v.toString(16)}`;

/** One random operation on the VM (the caller decides the rules' answer before performing it). */
type Send = (request: number, data: Buffer, attach: number[]) => number | { failure: string };

function randomOp(g: Generator, m: Model, seq: ReturnType<typeof sequenceFds>, send: Send): Op {
  const { fds } = seq;
  const anyFd = () => g.pick(fds);
  const eventfdLike = () => (g.chance(0.8) ? g.pick(fds.filter((f) => f.kind === 'eventfd')) : anyFd());
  const open = new Set(fds.filter((f) => f.fd >= 0).map((f) => f.fd));
  const ioctl = (request: number, data: Buffer, extra: number[] = []) => () => send(request, data, [...structFds(request, data, open), ...extra]);
  const roll = g.rng.below(100);
  if (roll < 28) {
    // KVM_SET_USER_MEMORY_REGION: often a slot that exists (move, flags, delete, change what may not).
    const existing = [...m.slots.values()];
    const base = existing.length && g.chance(0.4) ? g.pick(existing) : undefined;
    const slot = base && g.chance(0.8) ? base.id : g.pick([0, 1, 2, 3, 0x10001, KVM_USER_MEM_SLOTS]);
    const flags = base && g.chance(0.5) ? base.flags ^ g.pick([0, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY]) : g.pick([0, 0, 0, 1, 2, 3, 4]);
    const gpa = base && g.chance(0.5) ? base.gpa : g.pick([0n, 0x1000n, 0x2000n, 0x4000n, 0x10000n, 0x800n, U64_MAX - 0xfffn]);
    const size = base && g.chance(0.7) ? base.size : g.pick([0n, 0x1000n, 0x2000n, 0x4000n, 0x1001n, 0x10000n, 1n << 44n]);
    const offset = base && g.chance(0.7) ? base.offset : g.pick([0n, 0n, 0x1000n, 0x800n, 0xc000n]);
    const f = base && g.chance(0.7) ? base.fd : g.chance(0.8) ? g.pick(fds.filter((x) => x.kind === 'memfd')) : anyFd();
    const data = kvmUserspaceMemoryRegion({ slot, flags, guestPhysAddr: gpa, memorySize: size, offset });
    return {
      what: `KVM_SET_USER_MEMORY_REGION slot ${hex(slot)} flags ${flags} gpa ${hex(gpa)} size ${hex(size)} offset ${hex(offset)} with ${f.name}`,
      expect: (mm) => mm.memoryRegion(slot, flags, gpa, size, offset, f),
      perform: ioctl(KVM_SET_USER_MEMORY_REGION, data, f.fd >= 0 ? [f.fd] : []),
    };
  }
  if (roll < 53) {
    // KVM_SET_IOREGION: assign, or deassign (often of a region that exists).
    const r = m.regions.length && g.chance(0.3) ? g.pick(m.regions) : undefined;
    const addr = r ? r.addr : g.addr();
    const size = r ? r.size : g.pick([0n, 1n, 4n, 8n, 0x1000n, 0x2000n, U64_MAX]);
    let flags = r ? KVM_IOREGION_DEASSIGN | (r.pio ? KVM_IOREGION_PIO : 0) : g.pick([0, 0, KVM_IOREGION_PIO, KVM_IOREGION_POSTED_WRITES,
      KVM_IOREGION_POSTED_WRITES, KVM_IOREGION_PIO | KVM_IOREGION_POSTED_WRITES, KVM_IOREGION_DEASSIGN, 8]);
    if (g.chance(0.03)) flags |= 1 << g.rng.below(32);
    const read = g.chance(0.85) ? g.pick(fds.filter((f) => f.kind === 'pipe' || f.kind === 'socket')) : anyFd();
    const write = g.chance(0.85) ? g.pick(fds.filter((f) => f.kind === 'pipe' || f.kind === 'socket')) : anyFd();
    const data = kvmIoregion({ guest_paddr: addr, memory_size: size, read_fd: read.fd, write_fd: write.fd, flags: flags >>> 0 });
    return {
      what: `KVM_SET_IOREGION ${hex(addr)} size ${hex(size)} flags ${hex(flags >>> 0)} read ${read.name} write ${write.name}`,
      expect: (mm) => mm.ioregion(addr, size, flags >>> 0, read, write),
      perform: ioctl(KVM_SET_IOREGION, data),
    };
  }
  if (roll < 78) {
    // KVM_IOEVENTFD: assign, or deassign (often of one that exists, sometimes with another eventfd).
    const e = m.ioeventfds.length && g.chance(0.3) ? g.pick(m.ioeventfds) : undefined;
    const addr = e ? e.addr : g.addr();
    const len = e ? e.len : g.pick([0, 1, 2, 4, 8, 8, 3]);
    let flags = e ? KVM_IOEVENTFD_FLAG_DEASSIGN | (e.wildcard ? 0 : KVM_IOEVENTFD_FLAG_DATAMATCH) |
      (e.bus === 'pio' ? KVM_IOEVENTFD_FLAG_PIO : e.bus === 'ccw' ? KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY : 0) : g.pick([0, 0, 1, 2, 3, 4, 5, 8, 0x20]);
    if (g.chance(0.03)) flags |= 1 << g.rng.below(32);
    const datamatch = e ? e.datamatch : g.pick([0n, 1n, 2n]);
    const f = e && g.chance(0.8) ? e.fd : eventfdLike();
    const data = kvmIoeventfd({ addr, len, fd: f.fd, flags: flags >>> 0, datamatch });
    return {
      what: `KVM_IOEVENTFD ${hex(addr)} len ${len} flags ${hex(flags >>> 0)} datamatch ${datamatch} with ${f.name}`,
      expect: (mm) => mm.ioeventfd(addr, len, flags >>> 0, datamatch, f),
      perform: ioctl(KVM_IOEVENTFD, data),
    };
  }
  if (roll < 95) {
    const i = m.irqfds.length && g.chance(0.3) ? g.pick(m.irqfds) : undefined;
    const gsi = i ? i.gsi : g.pick([0, 1, 5, 24]);
    const flags = i ? KVM_IRQFD_FLAG_DEASSIGN : g.pick([0, 0, KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE, 3, 4]);
    const f = i && g.chance(0.8) ? i.fd : eventfdLike();
    const resample = eventfdLike();
    const data = kvmIrqfd({ gsi, fd: f.fd, flags, resamplefd: resample.fd });
    return {
      what: `KVM_IRQFD gsi ${gsi} flags ${flags} with ${f.name}, resamplefd ${resample.name}`,
      expect: (mm) => mm.irqfd(gsi, flags, f, resample),
      perform: ioctl(KVM_IRQFD, data),
    };
  }
  // The VMM resizes one of its memfds.
  const f = g.pick(fds.filter((x) => x.kind === 'memfd' && x.writable));
  const size = g.pick([0x2000n, 0x4000n, 0x10000n]);
  return {
    what: `ftruncate(${f.name}, ${hex(size)})`,
    expect: (mm) => mm.resize(f.file!, size),
    perform: () => -resizeFile(f.fd, size),
  };
}

// ---- the campaign -------------------------------------------------------------------------------

async function run({ iterations, seed, progress }: CampaignOptions): Promise<CampaignResult> {
  const result = emptyResult();
  const g = new Generator(new Rng(seed));
  const example = (text: string) => {
    if (result.examples.length < MAX_EXAMPLES) result.examples.push(text);
  };
  let kvm = Kvm.open();
  let ops = 0;
  let accepted = 0;
  let restarts = 0;
  let leakChecks = 0;
  let leaked = new Set<string>();
  const started = Date.now();
  let lastProgress = started;

  const settledFds = (limit?: number): Map<string, string> | undefined => {
    let now = fdsOf(kvm.pid);
    let last = -1;
    let since = Date.now();
    waitFor(() => {
      now = fdsOf(kvm.pid);
      if (now === undefined || (limit !== undefined && now.size <= limit)) return true;
      if (now.size !== last) [last, since] = [now.size, Date.now()];
      return limit === undefined && Date.now() - since >= 300;
    }, SETTLE_MS);
    return now;
  };
  const warmUp = (): Map<string, string> | undefined => {
    kvm.createVm().close();
    return settledFds();
  };
  let baseline = warmUp();

  for (let n = 1; n <= iterations; n++) {
    result.rounds = n;
    const vm = kvm.createVm();
    const irqchip = g.chance(0.6);
    if (irqchip) vm.createIrqchip();
    const seq = sequenceFds(vm.fd, kvm.fd);
    const model = new Model(irqchip);
    const history: string[] = [`VM${irqchip ? ' with irqchip' : ''}`];
    let broken = false;
    const send: Send = (request, data, attach) => {
      const o = boundedIoctl(vm.fd, encodeRequest({ request, data, fdNumbers: attach }), attach, REPLY_TIMEOUT_MS);
      if (o.kind !== 'reply') return { failure: o.what };
      o.r.fds.forEach(closeQuietly);
      return o.r.ret < 0 ? o.r.errno : 0;
    };
    const length = 1 + g.rng.below(MAX_OPS);
    for (let i = 0; i < length && !broken; i++) {
      const op = randomOp(g, model, seq, send);
      const expected = op.expect(model);
      const got = op.perform();
      ops++;
      history.push(op.what);
      const where = `seed ${seed} sequence ${n}`;
      if (typeof got !== 'number') {
        if (alive(kvm.pid)) result.hangs++;
        else result.kernelModelExits++;
        example(`${where}: ${got.failure} after: ${history.slice(-6).join('; ')}`);
        broken = true;
      } else if (got !== expected.errno) {
        result.undefinedErrnos++;
        const name = (e: number) => (e ? errnoName(e) : 'success');
        example(`${where} op ${i + 1}: ${name(got)}, the rules say ${name(expected.errno)}: ${history.slice(-8).join('; ')}`);
        break;
      } else if (!expected.errno) {
        accepted++;
        expected.apply?.();
      }
    }
    if (!alive(kvm.pid) && !broken) {
      result.kernelModelExits++;
      example(`seed ${seed} sequence ${n}: the kernel-model exited after: ${history.slice(-6).join('; ')}`);
      broken = true;
    }
    vm.close();
    seq.close();
    if (broken) {
      closeQuietly(kvm.fd);
      restarts++;
      kvm = Kvm.open();
      baseline = warmUp();
    } else if (n % EPOCH === 0 || n === iterations) {
      const now = settledFds(baseline?.size);
      if (now && baseline) {
        leakChecks++;
        // Counted by number: an fd closed and another opened in its place is no leak.
        const excess = now.size - baseline.size;
        const extra = newFds(baseline, now);
        if (excess > result.leakedFds) {
          result.leakedFds = excess;
          example(`seed ${seed}: after sequence ${n} the kernel-model holds ${excess} fds more than before: ${extra.filter((l) => !leaked.has(l)).slice(0, 6).join(', ')}`);
          leaked = new Set(extra);
        }
      }
    }
    if (Date.now() - lastProgress >= 2000) {
      lastProgress = Date.now();
      progress(`sequence ${n}/${iterations} (${ops} operations): hangs ${result.hangs}, kernel-model exits ${result.kernelModelExits}, mismatches ${result.undefinedErrnos}, leaked fds ${result.leakedFds}`);
    }
  }
  closeQuietly(kvm.fd);
  const pid = kvm.pid;
  waitFor(() => !alive(pid), SETTLE_MS);
  const left = childProcesses().filter(alive);
  result.leakedProcesses = left.length;
  if (left.length) example(`seed ${seed}: processes left after the last system fd closed: ${left.join(', ')}`);
  result.figures = { sequences: result.rounds, operations: ops, accepted, leak_checks: leakChecks, kernel_model_restarts: restarts,
    operations_per_s: Math.round(ops / ((Date.now() - started) / 1000)) };
  return result;
}

export const ioctlModel: Campaign = {
  name: 'ioctl-model',
  description: 'random KVM_SET_IOREGION / KVM_IOEVENTFD / KVM_SET_USER_MEMORY_REGION / KVM_IRQFD sequences against a reference model',
  iterations: 2_000,
  shortIterations: 50,
  run,
};
