// ioregionfd on the VM: KVM_SET_IOREGION (register / deassign, RFC v3 validation order and errnos,
// the intended overlap rule), the per-read-fd serialization contexts, per-region statistics, and the
// emulator capabilities (wire layout, failure exit). The data plane is in ioregion-device.ts.

import { IoregionStatsListType } from '../proto/control';
import { EEXIST, EINVAL, ENOENT, ENOSPC } from '../proto/errno';
import {
  IOREGION, KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT, KVM_CAP_EMU_IOREGIONFD_WIRE, KVM_EMU_GET_IOREGION_STATS,
  KVM_IOREGION_DEASSIGN, KVM_IOREGION_PIO, KVM_IOREGION_POSTED_WRITES, KVM_IOREGION_VALID_FLAG_MASK, KVM_SET_IOREGION,
} from '../proto/kvm-uapi';
import { closeQuietly, dup, fdKind, sameFile, socketType } from '../proto/os';
import type { KvmFeature } from './kvm';
import { fail, isControlSocket, ReceivedFds, Reply } from './server';
import type { Vm, VmDevice } from './vm';
import type { DeviceInfo } from './device-desc';
import type { BusName } from './io-bus';
import {
  CONTEXT_WORDS, CTX, FdTransport, IOREGION_SHARED, IoregionFields, MAX_CONTEXTS, MAX_STAT_SLOTS, SHARED_BYTES, STAT, statCounters,
} from './ioregionfd-shared';

const U64_MAX = (1n << 64n) - 1n;
/** A zero-length ioeventfd or size-0 ioregion occupies 8 bytes for overlap purposes (RFC v3). */
const ZERO_LENGTH_FOOTPRINT = 8n;

interface Context {
  /** The context's own reference to the read file, so identity checks never meet a closed or reused number. */
  readFd: number;
  users: number;
}

/** The VM's ioregionfd bookkeeping (vm.state 'ioregionfd'). */
interface IoregionState {
  contexts: (Context | undefined)[];
  statSlots: (number | undefined)[];
  shared: SharedArrayBuffer;
}

function state(vm: Vm): IoregionState {
  let s = vm.state.get('ioregionfd') as IoregionState | undefined;
  if (!s) {
    s = { contexts: [], statSlots: [], shared: vm.sharedBuffer(IOREGION_SHARED, SHARED_BYTES) };
    vm.state.set('ioregionfd', s);
  }
  return s;
}

function transportOf(fd: number): FdTransport | undefined {
  const t = socketType(fd);
  if (t === 'seqpacket' || t === 'stream') return t;
  if (t === undefined && fdKind(fd) === 'pipe') return 'pipe';
  // Any other fd (a FIFO, a character device) is used like a pipe: plain read()/write().
  return t === undefined ? 'pipe' : undefined;
}

/** The byte range a device covers for overlap checks, [start, end) as bigints. */
function footprint(addr: bigint, len: bigint): [bigint, bigint] {
  return [addr, addr + (len === 0n ? ZERO_LENGTH_FOOTPRINT : len)];
}

/**
 * Any ioregion or ioeventfd on `bus` sharing a byte with [addr, addr+len): the RFC's intended rule
 * (its code had an off-by-one at the upper end, not modelled).
 */
export function overlapping(vm: Vm, bus: BusName, addr: bigint, len: bigint): VmDevice | undefined {
  const [s, e] = footprint(addr, len);
  for (const d of vm.devicesOn(bus)) {
    if (d.desc.kind !== 'ioregion' && d.desc.kind !== 'ioeventfd') continue;
    const [ds, de] = footprint(d.desc.addr, d.desc.len);
    if (s < de && ds < e) return d;
  }
  return undefined;
}

/** Find or make the serialization context of a read fd (same open file = same context, any bus). */
function contextFor(st: IoregionState, readFd: number): number {
  for (let i = 0; i < st.contexts.length; i++) {
    const c = st.contexts[i];
    if (c && sameFile(c.readFd, readFd)) {
      c.users++;
      return i;
    }
  }
  const lock = new Int32Array(st.shared, 0, MAX_CONTEXTS * CONTEXT_WORDS);
  const word = (j: number, w: number) => Atomics.load(lock, CONTEXT_WORDS * j + w);
  // Reuse a freed context only once its lock is idle: a waiter may still hold an old ticket.
  let i = st.contexts.findIndex((c, j) => !c && word(j, CTX.next) === word(j, CTX.serving));
  if (i < 0) i = st.contexts.length;
  if (i >= MAX_CONTEXTS) throw fail(ENOSPC, `more than ${MAX_CONTEXTS} distinct ioregionfd read fds`);
  // Replies owed on the previous read file are not this one's.
  Atomics.store(lock, CONTEXT_WORDS * i + CTX.orphans, 0);
  st.contexts[i] = { readFd: dup(readFd), users: 1 };
  return i;
}

/** A free counters slot, zeroed; -1 marks it taken until the region's key is known. */
function allocStatSlot(st: IoregionState): number {
  let i = st.statSlots.findIndex((k) => k === undefined);
  if (i < 0) i = st.statSlots.length;
  if (i >= MAX_STAT_SLOTS) throw fail(ENOSPC, `more than ${MAX_STAT_SLOTS} ioregions`);
  st.statSlots[i] = -1;
  statCounters(st.shared, i).fill(0n);
  return i;
}

/** A device of the VM that is an ioregion (or its FAST_MMIO twin). */
type RegionDevice = VmDevice & { desc: Extract<DeviceInfo, { kind: 'ioregion' }> };

function isRegion(d: VmDevice): d is RegionDevice {
  return d.desc.kind === 'ioregion';
}

function release(vm: Vm, d: RegionDevice): void {
  const st = state(vm);
  const f = d.desc;
  if (f.context >= 0) {
    const c = st.contexts[f.context];
    if (c && --c.users === 0) {
      closeQuietly(c.readFd);
      st.contexts[f.context] = undefined;
    }
  }
  if (f.twinOf === undefined) st.statSlots[f.statSlot] = undefined;
  vm.removeDevice(d.desc.key);
}

/** KVM_SET_IOREGION. */
function setIoregion(vm: Vm, data: Buffer, fds: ReceivedFds): Reply {
  const paddr = data.readBigUInt64LE(IOREGION.guest_paddr);
  const size = data.readBigUInt64LE(IOREGION.memory_size);
  const userData = data.readBigUInt64LE(IOREGION.user_data);
  const readFdNo = data.readInt32LE(IOREGION.read_fd);
  const writeFdNo = data.readInt32LE(IOREGION.write_fd);
  const flags = data.readUInt32LE(IOREGION.flags);
  const bus: BusName = flags & KVM_IOREGION_PIO ? 'pio' : 'mmio';

  if (flags & ~KVM_IOREGION_VALID_FLAG_MASK) throw fail(EINVAL, `flags 0x${flags.toString(16)} has bits outside 0x${KVM_IOREGION_VALID_FLAG_MASK.toString(16)}`);
  if (flags & KVM_IOREGION_DEASSIGN) return deassign(vm, bus, paddr, size);
  if (paddr + size > U64_MAX) throw fail(EINVAL, `guest_paddr 0x${paddr.toString(16)} + memory_size 0x${size.toString(16)} wraps past 2^64`);
  if (size === 0n && !(flags & KVM_IOREGION_POSTED_WRITES)) throw fail(EINVAL, 'memory_size 0 (a FAST_MMIO doorbell) requires KVM_IOREGION_POSTED_WRITES');
  // The RFC fgets write_fd, then read_fd, which it does not look at for size-0 (write-only) regions.
  const writeFd = fds.take(writeFdNo, 'write_fd');
  let readFd = -1;
  try {
    if (size !== 0n) readFd = fds.take(readFdNo, 'read_fd');
    const readTransport = readFd >= 0 ? transportOf(readFd) : 'pipe';
    const writeTransport = transportOf(writeFd);
    if (!readTransport || !writeTransport) throw fail(EINVAL, 'read_fd/write_fd must be sockets (stream or seqpacket), pipes or FIFOs');
    // A VMM's own system, VM or vCPU fd would carry guest accesses into the kernel-model's control
    // plane (and a VM holding its own fd could never be destroyed): never a data-plane fd.
    for (const [fd, no, field] of [[writeFd, writeFdNo, 'write_fd'], [readFd, readFdNo, 'read_fd']] as const) {
      if (fd >= 0 && isControlSocket(fd)) throw fail(EINVAL, `${field} ${no} is a KVM system, VM or vCPU fd, not a device's fd`);
    }
    const clash = overlapping(vm, bus, paddr, size);
    if (clash) {
      throw fail(EEXIST, `[0x${paddr.toString(16)}, +0x${size.toString(16)}) overlaps the ${clash.desc.kind} at 0x${clash.desc.addr.toString(16)} (len ${clash.desc.len}) on the ${bus.toUpperCase()} bus`);
    }
    const twin = size === 0n && bus === 'mmio';
    if (vm.busFull(bus) || (twin && vm.busFull('fast_mmio'))) throw fail(ENOSPC, `the ${bus.toUpperCase()} bus already holds NR_IOBUS_DEVS devices`);

    const st = state(vm);
    const statSlot = allocStatSlot(st);
    let context = -1;
    try {
      if (size !== 0n) context = contextFor(st, readFd);
    } catch (e) {
      st.statSlots[statSlot] = undefined;
      throw e;
    }
    const fields: IoregionFields = {
      kind: 'ioregion', size, userData, posted: (flags & KVM_IOREGION_POSTED_WRITES) !== 0, pio: bus === 'pio',
      readTransport, writeTransport, context, statSlot,
    };
    // The FAST_MMIO twin gets its own reference to the write fd (taken before the VM owns anything).
    const twinFd = twin ? dup(writeFd) : -1;
    const key = vm.addDevice({ bus, addr: paddr, len: size, ...fields }, readFd >= 0 ? [readFd, writeFd] : [writeFd]);
    st.statSlots[statSlot] = key;
    if (twin) vm.addDevice({ bus: 'fast_mmio', addr: paddr, len: 0n, ...fields, twinOf: key }, [twinFd]);
    readFd = -1;
    return { ret: 0 };
  } catch (e) {
    closeQuietly(writeFd);
    closeQuietly(readFd);
    throw e;
  }
}

/** Deassign by exact (guest_paddr, memory_size) on the bus; a size-0 MMIO region takes its twin along. */
function deassign(vm: Vm, bus: BusName, paddr: bigint, size: bigint): Reply {
  const d = vm.devicesOn(bus).filter(isRegion).find((x) => x.desc.addr === paddr && x.desc.size === size);
  if (!d) throw fail(ENOENT, `no ioregion at exactly [0x${paddr.toString(16)}, +0x${size.toString(16)}) on the ${bus.toUpperCase()} bus`);
  const twin = vm.devicesOn('fast_mmio').filter(isRegion).find((x) => x.desc.twinOf === d.desc.key);
  if (twin) release(vm, twin);
  release(vm, d);
  return { ret: 0 };
}

/** KVM_EMU_GET_IOREGION_STATS: counters of every region, in registration order. */
function stats(vm: Vm): Reply {
  const st = state(vm);
  const regions = [...vm.devices.values()]
    .filter(isRegion)
    .filter((d) => d.desc.twinOf === undefined)
    .map((d) => {
      const f = d.desc;
      const c = statCounters(st.shared, f.statSlot);
      const v = (i: number) => Atomics.load(c, i).toString();
      return {
        guestPaddr: d.desc.addr.toString(), memorySize: f.size.toString(), pio: f.pio, userData: f.userData.toString(),
        reads: v(STAT.reads), writes: v(STAT.writes), postedWrites: v(STAT.posted), failures: v(STAT.failures),
        lastErrno: Number(Atomics.load(c, STAT.lastErrno)), interrupted: v(STAT.interrupted),
      };
    });
  return { ret: 0, data: IoregionStatsListType.encode({ regions }).finish() };
}

export const ioregionfdFeature: KvmFeature = {
  destroy: (vm) => {
    const st = vm.state.get('ioregionfd') as IoregionState | undefined;
    st?.contexts.forEach((c) => c && closeQuietly(c.readFd));
  },
  caps: (opts) => ({ [opts.ioregionfdCap]: 1, [KVM_CAP_EMU_IOREGIONFD_WIRE]: 1, [KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT]: 1 }),
  ioctls: {
    [KVM_SET_IOREGION]: (vm, req, fds) => setIoregion(vm, req.data, fds),
    [KVM_EMU_GET_IOREGION_STATS]: (vm) => stats(vm),
  },
  enableCap: {
    [KVM_CAP_EMU_IOREGIONFD_WIRE]: (vm, args) => {
      if (args[0] !== 3n && args[0] !== 1n) throw fail(EINVAL, `wire layout ${args[0]}: use 3 (RFC v3) or 1 (v1/v2 info word)`);
      vm.setConfig({ wire: args[0] === 3n ? 'v3' : 'v1' });
    },
    [KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT]: (vm, args) => {
      if (args[0] > 1n) throw fail(EINVAL, `failure exit ${args[0]}: use 0 or 1`);
      vm.setConfig({ failureExit: args[0] === 1n });
    },
  },
};
