// KVM_IOEVENTFD (virt/kvm/eventfd.c): a guest write to an address signals an eventfd instead of
// exiting to the VMM. The VM half validates and keeps the registrations in the kernel's order and
// with its errnos; the vCPU half is the bus device that matches writes and bumps the counter.
//
// On x86 the kernel accepts KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY (without PIO) and registers on the
// s390 notify bus, which nothing dispatches on x86: such entries are kept for collisions and
// deassign only (measured on a real /dev/kvm: accepted, EEXIST on a duplicate, deassign works).

import { EEXIST, EINVAL, ENOENT, ENOSPC } from '../proto/errno';
import {
  IOEVENTFD, KVM_CAP_IOEVENTFD, KVM_CAP_IOEVENTFD_ANY_LENGTH, KVM_CAP_IOEVENTFD_NO_LENGTH, KVM_IOEVENTFD,
  KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_IOEVENTFD_FLAG_PIO,
  KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY, KVM_IOEVENTFD_VALID_FLAG_MASK,
} from '../proto/kvm-uapi';
import { closeQuietly, dup, fdKind, sameFile } from '../proto/os';
import type { BusName } from './io-bus';
import type { KvmFeature } from './kvm';
import { fail, ReceivedFds, Reply } from './server';
import type { Vm } from './vm';

/** enum kvm_bus as far as ioeventfds go: the dispatching buses plus s390's notify bus. */
export type IoeventfdBus = BusName | 'ccw';

/** One registration (struct _ioeventfd). A len-0 MMIO entry has a second one on 'fast_mmio'. */
export interface Ioeventfd {
  bus: IoeventfdBus;
  addr: bigint;
  len: number;
  /** Registered without DATAMATCH. */
  wildcard: boolean;
  datamatch: bigint;
}

interface Entry extends Ioeventfd {
  /** The VM's reference to the eventfd (owned by the device, or by the entry on the ccw bus). */
  fd: number;
  /** Device key on a dispatching bus; undefined on 'ccw'. */
  key: number | undefined;
}

const U64_MAX = 0xffff_ffff_ffff_ffffn;
/** A len-0 ioeventfd counts as 8 bytes against ioregions (ioregionfd RFC v3). */
const ZERO_LENGTH_SPAN = 8n;

/**
 * ioeventfd_check_collision: same bus and address, and either length is 0, or the lengths are equal
 * and either side is a wildcard or the datamatch values are equal. The eventfd is not part of it.
 */
export function ioeventfdCollides(p: Ioeventfd, q: Ioeventfd): boolean {
  return p.bus === q.bus && p.addr === q.addr &&
    (!p.len || !q.len || (p.len === q.len && (p.wildcard || q.wildcard || p.datamatch === q.datamatch)));
}

/** Any byte in common between [a, a+alen) and [b, b+blen) (a length 0 counts as 8 on the ioeventfd side). */
export function rangesOverlap(a: bigint, alen: bigint, b: bigint, blen: bigint): boolean {
  return a < b + blen && b < a + alen;
}

/** The bus a kvm_ioeventfd's flags select (ioeventfd_bus_from_flags). */
export function busFromFlags(flags: number): IoeventfdBus {
  if (flags & KVM_IOEVENTFD_FLAG_PIO) return 'pio';
  if (flags & KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY) return 'ccw';
  return 'mmio';
}

/**
 * Claim an fd named in an ioctl struct that must be an eventfd: EBADF when it is not an open fd
 * (eventfd_ctx_fdget's fdget), EINVAL when it is some other file.
 */
export function takeEventfd(fds: ReceivedFds, number: number, field: string): number {
  const fd = fds.take(number, field);
  const kind = fdKind(fd);
  if (kind !== 'eventfd') {
    closeQuietly(fd);
    throw fail(EINVAL, `${field} ${number} is a ${kind}, not an eventfd`);
  }
  return fd;
}

/** A VM's registrations (kvm->ioeventfds), indexed by bus and address: every rule needs both equal. */
class Registry {
  private readonly byAddr = new Map<string, Entry[]>();

  private static key(bus: IoeventfdBus, addr: bigint): string {
    return `${bus}:${addr}`;
  }

  /** Entries at this bus and address, in registration order. */
  at(bus: IoeventfdBus, addr: bigint): readonly Entry[] {
    return this.byAddr.get(Registry.key(bus, addr)) ?? [];
  }

  add(e: Entry): void {
    const k = Registry.key(e.bus, e.addr);
    const list = this.byAddr.get(k);
    if (list) list.push(e);
    else this.byAddr.set(k, [e]);
  }

  delete(e: Entry): void {
    const k = Registry.key(e.bus, e.addr);
    const list = this.byAddr.get(k) ?? [];
    list.splice(list.indexOf(e), 1);
    if (!list.length) this.byAddr.delete(k);
  }

  *all(): IterableIterator<Entry> {
    for (const list of this.byAddr.values()) yield* list;
  }
}

function registry(vm: Vm): Registry {
  let r = vm.state.get('ioeventfd') as Registry | undefined;
  if (!r) {
    r = new Registry();
    vm.state.set('ioeventfd', r);
  }
  return r;
}

interface Args {
  datamatch: bigint;
  addr: bigint;
  len: number;
  fd: number;
  flags: number;
}

function parse(data: Buffer): Args {
  return {
    datamatch: data.readBigUInt64LE(IOEVENTFD.datamatch),
    addr: data.readBigUInt64LE(IOEVENTFD.addr),
    len: data.readUInt32LE(IOEVENTFD.len),
    fd: data.readInt32LE(IOEVENTFD.fd),
    flags: data.readUInt32LE(IOEVENTFD.flags),
  };
}

const hex = (v: bigint | number) => `0x${v.toString(16)}`;

/** KVM_IOEVENTFD: DEASSIGN decides the path first, as kvm_ioeventfd() does. */
function ioeventfdIoctl(vm: Vm, data: Buffer, fds: ReceivedFds): Reply {
  const a = parse(data);
  if (a.flags & KVM_IOEVENTFD_FLAG_DEASSIGN) return deassign(vm, a, fds);
  return assign(vm, a, fds);
}

/** kvm_assign_ioeventfd: the checks in the kernel's order, then the bus, then the fast-MMIO twin. */
function assign(vm: Vm, a: Args, fds: ReceivedFds): Reply {
  if (![0, 1, 2, 4, 8].includes(a.len)) throw fail(EINVAL, `len ${a.len} is not 0, 1, 2, 4 or 8`);
  if (a.addr + BigInt(a.len) > U64_MAX) throw fail(EINVAL, `addr ${hex(a.addr)} + len ${a.len} wraps around`);
  if (a.flags & ~KVM_IOEVENTFD_VALID_FLAG_MASK) throw fail(EINVAL, `unknown flags ${hex(a.flags & ~KVM_IOEVENTFD_VALID_FLAG_MASK)}`);
  if (!a.len && a.flags & KVM_IOEVENTFD_FLAG_DATAMATCH) throw fail(EINVAL, 'len 0 (any length) cannot be combined with DATAMATCH');
  const bus = busFromFlags(a.flags);
  const fd = takeEventfd(fds, a.fd, 'kvm_ioeventfd.fd');
  const wildcard = !(a.flags & KVM_IOEVENTFD_FLAG_DATAMATCH);
  const p: Ioeventfd = { bus, addr: a.addr, len: a.len, wildcard, datamatch: wildcard ? 0n : a.datamatch };
  let entry: Entry;
  try {
    entry = register(vm, p, fd);
  } catch (e) {
    closeQuietly(fd);
    throw e;
  }
  // When length is ignored, MMIO is also put on the fast-MMIO bus; if that fails, undo the first.
  if (!a.len && bus === 'mmio') {
    const twinFd = dup(fd);
    try {
      register(vm, { ...p, bus: 'fast_mmio' }, twinFd);
    } catch (e) {
      closeQuietly(twinFd);
      unregister(vm, entry);
      throw e;
    }
  }
  return { ret: 0 };
}

/** kvm_assign_ioeventfd_idx after the eventfd lookup: collisions, room on the bus, registration. */
function register(vm: Vm, p: Ioeventfd, fd: number): Entry {
  const reg = registry(vm);
  const other = reg.at(p.bus, p.addr).find((q) => ioeventfdCollides(p, q));
  if (other) {
    throw fail(EEXIST, `${p.bus} ${hex(p.addr)} len ${p.len}${p.wildcard ? '' : ` datamatch ${hex(p.datamatch)}`} collides with the ioeventfd at ${hex(other.addr)} len ${other.len}${other.wildcard ? '' : ` datamatch ${hex(other.datamatch)}`}`);
  }
  // ioregionfd's rule: an ioeventfd may not share a byte with an ioregion on the MMIO or PIO bus.
  if (p.bus === 'mmio' || p.bus === 'pio') {
    const span = p.len ? BigInt(p.len) : ZERO_LENGTH_SPAN;
    for (const d of vm.devices.values()) {
      if (d.desc.kind !== 'ioregion' || d.desc.bus !== p.bus) continue;
      const size = d.desc.len || ZERO_LENGTH_SPAN;
      if (rangesOverlap(p.addr, span, d.desc.addr, size)) {
        throw fail(EEXIST, `${p.bus} ${hex(p.addr)} len ${p.len} overlaps the ioregion at ${hex(d.desc.addr)} size ${hex(size)}`);
      }
    }
  }
  let key: number | undefined;
  if (p.bus !== 'ccw') {
    if (vm.busFull(p.bus)) throw fail(ENOSPC, `the ${p.bus} bus is full (NR_IOBUS_DEVS devices that are not ioeventfds)`);
    key = vm.addDevice({ kind: 'ioeventfd', bus: p.bus, addr: p.addr, len: BigInt(p.len), wildcard: p.wildcard, datamatch: p.datamatch }, [fd]);
  }
  const entry: Entry = { ...p, fd, key };
  reg.add(entry);
  return entry;
}

function unregister(vm: Vm, e: Entry): void {
  registry(vm).delete(e);
  if (e.key !== undefined) vm.removeDevice(e.key);
  else closeQuietly(e.fd);
}

/**
 * kvm_deassign_ioeventfd: no length or flag validation; the eventfd must resolve (EBADF / EINVAL);
 * the first entry with the same bus, eventfd, address, length, wildcard-ness and (if set) datamatch
 * goes, else ENOENT. A len-0 MMIO deassign also removes the fast-MMIO twin (its result is ignored).
 */
function deassign(vm: Vm, a: Args, fds: ReceivedFds): Reply {
  const fd = takeEventfd(fds, a.fd, 'kvm_ioeventfd.fd');
  try {
    const bus = busFromFlags(a.flags);
    const wildcard = !(a.flags & KVM_IOEVENTFD_FLAG_DATAMATCH);
    const removeFrom = (b: IoeventfdBus): boolean => {
      const e = registry(vm).at(b, a.addr).find((q) => q.len === a.len && q.wildcard === wildcard &&
        (wildcard || q.datamatch === a.datamatch) && sameFile(q.fd, fd));
      if (e) unregister(vm, e);
      return e !== undefined;
    };
    const found = removeFrom(bus);
    if (!a.len && bus === 'mmio') removeFrom('fast_mmio');
    if (!found) {
      throw fail(ENOENT, `no ioeventfd on ${bus} at ${hex(a.addr)} len ${a.len}${wildcard ? '' : ` datamatch ${hex(a.datamatch)}`} with this eventfd`);
    }
    return { ret: 0 };
  } finally {
    closeQuietly(fd);
  }
}

/** VM destruction: ccw entries hold their own fd; the VM closes device fds itself. */
function destroy(vm: Vm): void {
  for (const e of registry(vm).all()) if (e.key === undefined) closeQuietly(e.fd);
  vm.state.delete('ioeventfd');
}

export const ioeventfd: KvmFeature = {
  caps: () => ({ [KVM_CAP_IOEVENTFD]: 1, [KVM_CAP_IOEVENTFD_NO_LENGTH]: 1, [KVM_CAP_IOEVENTFD_ANY_LENGTH]: 1 }),
  ioctls: { [KVM_IOEVENTFD]: (vm, req, fds) => ioeventfdIoctl(vm, req.data, fds) },
  destroy,
};
