// Guest memory slots: KVM_SET_USER_MEMORY_REGION's validation (in the kernel's order, with its
// errnos), create / move / flags-only / delete, and the sorted view the vCPUs translate GPAs with.

import { EEXIST, EINVAL } from '../proto/errno';
import {
  KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_MAX_NR_PAGES, KVM_MEM_READONLY, KVM_USER_MEM_SLOTS, PAGE_SIZE,
} from '../proto/kvm-uapi';
import { errnoName } from '../proto/errno';
import {
  addSeals, F_SEAL_SEAL, F_SEAL_SHRINK, fdKind, fileSize, getSeals, getStatusFlags, O_ACCMODE, O_RDWR, probeMap, PROT_READ, PROT_WRITE,
} from '../proto/os';
import { fail } from './server';

const PAGE = BigInt(PAGE_SIZE);
const U64 = (1n << 64n) - 1n;
const VALID_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY;

/** struct kvm_userspace_memory_region as received; userspace_addr is the offset into the backing memfd. */
export interface MemoryRegionArg {
  slot: number;
  flags: number;
  guestPhysAddr: bigint;
  memorySize: bigint;
  userspaceAddr: bigint;
}

/** Where a slot's bytes live: a memfd the kernel-model holds, sealed against shrinking once a slot uses it. */
export interface Backing {
  key: number;
  fd: number;
  size: number;
  /** Opened O_RDWR: only then may a slot without KVM_MEM_READONLY use it. */
  writable: boolean;
  /** F_SEAL_SHRINK is set; `sealable`: it is, or this fd can add it. */
  sealed: boolean;
  sealable: boolean;
}

export interface Memslot {
  /** Unique per version of a slot: a moved or re-flagged slot gets a new key, so vCPUs remap it. */
  key: number;
  id: number;
  flags: number;
  gpa: bigint;
  size: bigint;
  backing: Backing;
  offset: bigint;
}

/**
 * What the model needs to know of a memfd before any slot may use it: that it is a memfd, its size,
 * whether it is writable, and whether it is (or can be) sealed against shrinking. A memfd that anyone
 * could truncate would turn a guest's RAM access into SIGBUS in the kernel-model. Nothing is changed
 * here: the seal is added by sealBacking() once a request has passed every check.
 */
export function inspectBacking(fd: number): { size: number; writable: boolean; sealed: boolean; sealable: boolean } {
  const kind = fdKind(fd);
  if (kind !== 'memfd') throw fail(EINVAL, `slot memory must be a memfd (userspace_addr is an offset into it), got a ${kind}`);
  const seals = getSeals(fd);
  const mode = getStatusFlags(fd);
  const writable = mode >= 0 && (mode & O_ACCMODE) === O_RDWR;
  const sealed = seals >= 0 && (seals & F_SEAL_SHRINK) !== 0;
  // F_ADD_SEALS needs a writable fd and a memfd without F_SEAL_SEAL (fcntl(2)).
  return { size: fileSize(fd), writable, sealed, sealable: sealed || (seals >= 0 && !(seals & F_SEAL_SEAL) && writable) };
}

/**
 * Seal an accepted slot's memfd against shrinking (a no-op when it already is), and make sure it
 * still holds the slot's bytes `[0, end)`: the VMM may have shrunk it while the request was checked.
 */
export function sealBacking(b: Backing, end: bigint): void {
  if (b.sealed) return;
  if (addSeals(b.fd, F_SEAL_SHRINK) < 0) throw fail(EINVAL, 'the memfd cannot be sealed against shrinking');
  b.sealed = true;
  b.size = fileSize(b.fd);
  if (end > BigInt(b.size)) throw fail(EINVAL, `the memfd shrank to 0x${b.size.toString(16)} bytes while the request was checked`);
}

/** Map and unmap the slot's range once, as its vCPU threads will, so a slot they cannot map is refused now. */
export function probeMapping(b: Backing, offset: bigint, size: bigint, readonly: boolean): void {
  const errno = probeMap(b.fd, Number(size), offset, readonly ? PROT_READ : PROT_READ | PROT_WRITE);
  if (errno) throw fail(EINVAL, `the memfd range [0x${offset.toString(16)}, +0x${size.toString(16)}) cannot be mapped: ${errnoName(errno)}`);
}

export type MemslotChange = 'create' | 'delete' | 'move' | 'flags' | 'none';

export class Memslots {
  private readonly byId = new Map<number, Memslot>();
  private sorted: Memslot[] = [];
  private nextKey = 1;

  get slots(): readonly Memslot[] {
    return this.sorted;
  }

  get(id: number): Memslot | undefined {
    return this.byId.get(id);
  }

  /**
   * Validate a KVM_SET_USER_MEMORY_REGION in __kvm_set_memory_region's order. `backing` is resolved
   * lazily because the kernel checks the user address (our memfd + offset) only after the flags.
   * Returns what kind of change it is; nothing is modified (see apply()).
   */
  check(m: MemoryRegionArg, backing: () => Backing | undefined): { change: MemslotChange; backing?: Backing } {
    const asId = m.slot >>> 16;
    const id = m.slot & 0xffff;
    // kvm_vm_ioctl_set_memory_region checks the (u16) slot id before anything else.
    if (id >= KVM_USER_MEM_SLOTS) throw fail(EINVAL, `slot id ${id} >= KVM_USER_MEM_SLOTS (${KVM_USER_MEM_SLOTS})`);
    if (m.flags & ~VALID_FLAGS) throw fail(EINVAL, `flags 0x${m.flags.toString(16)} has bits outside 0x${VALID_FLAGS.toString(16)}`);
    if (m.memorySize % PAGE) throw fail(EINVAL, `memory_size 0x${m.memorySize.toString(16)} is not page aligned`);
    if (m.guestPhysAddr % PAGE) throw fail(EINVAL, `guest_phys_addr 0x${m.guestPhysAddr.toString(16)} is not page aligned`);
    if (m.userspaceAddr % PAGE) throw fail(EINVAL, `userspace_addr (memfd offset) 0x${m.userspaceAddr.toString(16)} is not page aligned`);
    let b: Backing | undefined;
    if (m.memorySize !== 0n) {
      b = backing();
      if (!b) throw fail(EINVAL, 'no memfd attached for the slot\'s memory (userspace_addr is an offset into it)');
      if (m.userspaceAddr + m.memorySize > BigInt(b.size)) {
        throw fail(EINVAL, `memfd offset 0x${m.userspaceAddr.toString(16)} + size 0x${m.memorySize.toString(16)} exceeds the memfd's 0x${b.size.toString(16)} bytes`);
      }
      if (!b.writable && !(m.flags & KVM_MEM_READONLY)) {
        throw fail(EINVAL, 'the memfd is open read-only: a slot without KVM_MEM_READONLY needs it O_RDWR');
      }
      if (!b.sealable) {
        throw fail(EINVAL, 'the memfd cannot be sealed against shrinking: create it with MFD_ALLOW_SEALING (or add F_SEAL_SHRINK yourself)');
      }
    }
    // One address space, as on the measured host (KVM_CAP_MULTI_ADDRESS_SPACE 0: no SMM).
    if (asId >= 1) throw fail(EINVAL, `slot 0x${m.slot.toString(16)}: address space ${asId} does not exist (only 0)`);
    if (m.guestPhysAddr + m.memorySize > U64) throw fail(EINVAL, 'guest_phys_addr + memory_size wraps past 2^64');
    if (m.memorySize / PAGE > BigInt(KVM_MEM_MAX_NR_PAGES)) throw fail(EINVAL, 'memory_size is more than KVM_MEM_MAX_NR_PAGES pages');

    const old = this.byId.get(id);
    if (m.memorySize === 0n) {
      if (!old) throw fail(EINVAL, `slot ${id} does not exist, nothing to delete`);
      return { change: 'delete' };
    }
    let change: MemslotChange;
    if (!old) {
      change = 'create';
    } else {
      if (m.userspaceAddr !== old.offset || !b || b.key !== old.backing.key || m.memorySize !== old.size || ((m.flags ^ old.flags) & KVM_MEM_READONLY)) {
        throw fail(EINVAL, `slot ${id} exists: only its guest_phys_addr or dirty-log flag may change`);
      }
      if (m.guestPhysAddr !== old.gpa) change = 'move';
      else if (m.flags !== old.flags) change = 'flags';
      else return { change: 'none' };
    }
    if (change === 'create' || change === 'move') {
      const clash = this.overlap(id, m.guestPhysAddr, m.guestPhysAddr + m.memorySize);
      if (clash) throw fail(EEXIST, `[0x${m.guestPhysAddr.toString(16)}, +0x${m.memorySize.toString(16)}) overlaps slot ${clash.id} at 0x${clash.gpa.toString(16)}`);
    }
    return { change, backing: b };
  }

  /**
   * Apply a change check() accepted. Returns the removed slot (delete/move/flags) so its backing can
   * be released, and an undo that puts the slots back as they were (for a change that cannot be
   * published to the vCPUs).
   */
  apply(m: MemoryRegionArg, change: MemslotChange, backing?: Backing): { old: Memslot | undefined; undo: () => void } {
    const id = m.slot & 0xffff;
    const old = this.byId.get(id);
    let added: Memslot | undefined;
    if (change === 'none') return { old: undefined, undo: () => undefined };
    if (old) this.remove(old);
    if (change !== 'delete') {
      added = { key: this.nextKey++, id, flags: m.flags, gpa: m.guestPhysAddr, size: m.memorySize, backing: backing!, offset: m.userspaceAddr };
      this.insert(added);
    }
    return {
      old,
      undo: () => {
        if (added) this.remove(added);
        if (old) this.insert(old);
      },
    };
  }

  private remove(slot: Memslot): void {
    this.byId.delete(slot.id);
    this.sorted.splice(this.sorted.indexOf(slot), 1);
  }

  private insert(slot: Memslot): void {
    this.byId.set(slot.id, slot);
    // Slots usually arrive in ascending order, so this is an append in the common case.
    this.sorted.splice(this.lowerBound(slot.gpa), 0, slot);
  }

  /** Index of the first slot whose gpa is >= addr. */
  private lowerBound(addr: bigint): number {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sorted[mid].gpa < addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Any slot other than `id` overlapping [start, end): slots are disjoint, so look just below `end`. */
  private overlap(id: number, start: bigint, end: bigint): Memslot | undefined {
    const lo = this.lowerBound(end);
    for (let i = lo - 1; i >= 0 && i >= lo - 2; i--) {
      const s = this.sorted[i];
      if (s.id === id) continue;
      return s.gpa + s.size > start ? s : undefined;
    }
    return undefined;
  }

  /** True if any slot still uses this backing. */
  uses(backing: Backing): boolean {
    for (const s of this.byId.values()) if (s.backing === backing) return true;
    return false;
  }
}
