// set_memory_region_test: KVM_SET_USER_MEMORY_REGION's errno matrix in __kvm_set_memory_region's
// order (each row's errno measured on a real x86 /dev/kvm), create / move / flags-only / delete,
// KVM_CAP_NR_MEMSLOTS slots and not one more, a guest reading a GPA while the host moves and deletes
// its slot (reads in the gap exit KVM_EXIT_MMIO and are answered with 0xbeef, as in the kernel's
// test), and a KVM_MEM_READONLY slot whose writes exit as MMIO.
//
// In this model userspace_addr is an offset into a memfd that travels beside the ioctl: "no memfd" and
// "offset + size beyond the memfd" stand in for the kernel's access_ok() failure, also EINVAL.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { EEXIST, EFAULT, EINVAL, errnoName } from '../../proto/errno';
import {
  KVM_CAP_NR_MEMSLOTS, KVM_EXIT_IO, KVM_EXIT_MMIO, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KVM_SET_USER_MEMORY_REGION,
  KVM_USER_MEM_SLOTS, PAGE_SIZE,
} from '../../proto/kvm-uapi';
import { addSeals, closeQuietly, F_SEAL_SEAL, F_SEAL_SHRINK, getSeals, memfd, resizeFile } from '../../proto/os';
import { FIXTURE, Step, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { GUEST_DONE, GUEST_SYNC, GUEST_SYNC_ARGS, readq, writeq } from './lib/guest';
import {
  __vcpu_run_start, __vcpu_run_wait, __vm_ioctl, __vm_set_user_memory_region, exit_reason, kvm_check_cap, KvmVcpu,
  KvmVm, kvm_vm_free, le_store, run_mmio, vcpu_args_set, vcpu_run, vm_create_barebones, vm_create_with_one_vcpu,
  vm_mem_region_delete, vm_mem_region_move, vm_set_user_memory_region, vm_userspace_mem_region_add,
} from './lib/kvm_util';
import { get_ucall, REPORT_GUEST_ASSERT, Ucall, UCALL_ABORT, UCALL_DONE, UCALL_SYNC } from './lib/ucall_common';
import { msleep, pr_info, TEST_ASSERT, TEST_ASSERT_EQ } from './lib/test_util';

const KVM_MEM_GUEST_MEMFD = 1 << 2;
const MEM_REGION_GPA = 0xc0000000n;
const MEM_REGION_SLOT = 10;
const MMIO_VAL = 0xbeefn;
/** Where the moved-away slot goes: far from MEM_REGION_GPA, so the guest's reads there find no RAM. */
const FAR_GPA = 0x100000000n;
const READONLY_GPA = 0xd0000000n;
const READONLY_SLOT = 11;
const READONLY_PATTERN = 0x1122334455667788n;
/** The kernel test's MEM_REGION_SIZE for test_add_max_memory_regions. */
const MAX_REGIONS_SIZE = 0x200000n;
/** How long the host lets the guest spin before it changes the slot under it. */
const SPIN_MS = 20;

function spin_on_val(gpa: bigint, spin: bigint): bigint {
  let val: bigint;
  do {
    val = readq(gpa);
  } while (val === spin);
  return val;
}

/** Reads MEM_REGION_GPA while the host moves its slot around, reporting each value it settles on. */
export function guest_code_move_memory_region(gpa: bigint): void {
  GUEST_SYNC(0);
  // Slot moved to gpa - 4096 and back: RAM all along, so 0 until the host's 1 (never its 2).
  GUEST_SYNC_ARGS(1, spin_on_val(gpa, 0n));
  // Slot moved away: the read exits to the host, which answers MMIO_VAL.
  GUEST_SYNC_ARGS(2, spin_on_val(gpa, 1n));
  // Slot moved back while the guest reads MMIO: RAM again (3).
  GUEST_SYNC_ARGS(3, spin_on_val(gpa, MMIO_VAL));
  // Slot deleted: MMIO again.
  GUEST_SYNC_ARGS(4, spin_on_val(gpa, 3n));
  GUEST_DONE();
}

/** Reads a read-only slot, writes it (an MMIO exit), and reads it again. */
export function guest_code_readonly(gpa: bigint): void {
  GUEST_SYNC_ARGS(1, readq(gpa));
  writeq(gpa, 0xdeadbeefn);
  GUEST_SYNC_ARGS(2, readq(gpa));
  GUEST_DONE();
}

/** The memfds and files the matrix rows name, created per test. */
interface Backings {
  mem: number;
  other: number;
  huge: number;
  file: number;
  unsealable: number;
  readOnly: number;
}

interface Matrix extends Backings {
  vm: KvmVm;
}

interface Row {
  what: string;
  slot: number;
  flags: number;
  gpa: bigint;
  size: bigint;
  /** Which backing goes beside the ioctl, or none. */
  fd: keyof Backings | 'none';
  offset: bigint;
  /** 0 for success. */
  errno: number;
  /** Extra check on the failure's detail (the validation order). */
  detail?: RegExp;
}

/** The slot count the rows' names and limits use; the fixture checks the kernel-model agrees. */
const nrMemslots = KVM_USER_MEM_SLOTS;

const matrix = FIXTURE('errno_matrix', (): Matrix => {
  TEST_ASSERT(kvm_check_cap(KVM_CAP_NR_MEMSLOTS) === nrMemslots, `KVM_CAP_NR_MEMSLOTS should be ${nrMemslots}`);
  const mem = memfd('set_memory_region_test', 0x100000);
  const unsealable = memfd('set_memory_region_test-unsealable', 0x10000);
  TEST_ASSERT(addSeals(unsealable, F_SEAL_SEAL) === 0, 'F_SEAL_SEAL on a fresh memfd');
  return {
    vm: vm_create_barebones(), mem, unsealable,
    other: memfd('set_memory_region_test-other', 0x100000),
    // Big enough that only KVM_MEM_MAX_NR_PAGES can reject 2^31 pages (sparse: costs nothing).
    huge: memfd('set_memory_region_test-huge', (1n << 31n) * BigInt(PAGE_SIZE) + BigInt(PAGE_SIZE)),
    // Backings the model refuses: not a memfd, a memfd that cannot be sealed against shrinking, and a
    // read-only open of a good memfd (fine for a KVM_MEM_READONLY slot only).
    file: tempFile(0x10000),
    readOnly: fs.openSync(`/proc/self/fd/${mem}`, 'r'),
  };
}, (m) => {
  kvm_vm_free(m.vm);
  [m.mem, m.other, m.huge, m.file, m.unsealable, m.readOnly].forEach(closeQuietly);
});

const row = (what: string, slot: number, flags: number, gpa: bigint, size: bigint, fd: Row['fd'], offset: bigint, errno: number, detail?: RegExp): Row =>
  ({ what, slot, flags, gpa, size, fd, offset, errno, detail });
const K64 = 0x10000n;
const rows: Row[] = [
  // Invalid requests, in __kvm_set_memory_region's order; nothing exists yet.
  row('flags with KVM_MEM_GUEST_MEMFD (no private memory here)', 2, KVM_MEM_GUEST_MEMFD, 0x100000n, K64, 'mem', 0n, EINVAL),
  row('flags with bit 31', 2, 0x80000000, 0x100000n, K64, 'mem', 0n, EINVAL),
  row('bad flags and an unaligned memory_size: the flags are checked first', 2, KVM_MEM_GUEST_MEMFD, 0x100000n, 0x1001n, 'mem', 0n, EINVAL, /flags/),
  row('memory_size 0x1001 is not page aligned', 2, 0, 0x100000n, 0x1001n, 'mem', 0n, EINVAL, /memory_size/),
  row('guest_phys_addr 0x100800 is not page aligned', 2, 0, 0x100800n, K64, 'mem', 0n, EINVAL, /guest_phys_addr/),
  row('userspace_addr (memfd offset) 0x800 is not page aligned', 2, 0, 0x100000n, K64, 'mem', 0x800n, EINVAL, /offset/),
  row('no memfd attached', 2, 0, 0x100000n, K64, 'none', 0n, EINVAL, /memfd/),
  row('memfd offset + memory_size beyond the memfd', 2, 0, 0x100000n, 0x20000n, 'mem', 0xf0000n, EINVAL, /exceeds/),
  row('a regular file instead of a memfd', 2, 0, 0x100000n, K64, 'file', 0n, EINVAL, /must be a memfd/),
  row('a memfd that cannot be sealed against shrinking (F_SEAL_SEAL set)', 2, 0, 0x100000n, K64, 'unsealable', 0n, EINVAL, /sealed/),
  row('a read-only open of the memfd for a slot without KVM_MEM_READONLY', 2, 0, 0x100000n, K64, 'readOnly', 0n, EINVAL, /read-only/),
  row(`slot id KVM_CAP_NR_MEMSLOTS (${nrMemslots})`, nrMemslots, 0, 0x100000n, K64, 'mem', 0n, EINVAL),
  row('slot id 0xffff', 0xffff, 0, 0x100000n, K64, 'mem', 0n, EINVAL),
  row('as_id 1 (slot 0x10002): one address space only (KVM_CAP_MULTI_ADDRESS_SPACE is 0 on the measured host)', 0x10002, 0, 0x100000n, K64, 'mem', 0n, EINVAL),
  row('as_id 0xffff', 0xffff0002, 0, 0x100000n, K64, 'mem', 0n, EINVAL),
  row('guest_phys_addr + memory_size wraps', 2, 0, 0xfffffffffffff000n, 0x2000n, 'mem', 0n, EINVAL, /wraps/),
  row('guest_phys_addr + memory_size is exactly 2^64 (also a wrap)', 2, 0, 0xffffffffffffe000n, 0x2000n, 'mem', 0n, EINVAL, /wraps/),
  row('memory_size of 2^31 pages (more than KVM_MEM_MAX_NR_PAGES)', 2, 0, 0n, (1n << 31n) * BigInt(PAGE_SIZE), 'huge', 0n, EINVAL, /KVM_MEM_MAX_NR_PAGES/),
  row('delete of a slot that does not exist', 5, 0, 0n, 0n, 'none', 0n, EINVAL, /does not exist/),
  row(`delete with slot id KVM_CAP_NR_MEMSLOTS (${nrMemslots})`, nrMemslots, 0, 0n, 0n, 'none', 0n, EINVAL),
  row('delete with bad flags', 5, KVM_MEM_GUEST_MEMFD, 0n, 0n, 'none', 0n, EINVAL, /flags/),
  // Creates, overlaps (EEXIST) and their edges.
  row('create slot 0 at [0x100000, +64K)', 0, 0, 0x100000n, K64, 'mem', 0n, 0),
  row('create slot 1 adjacent above it at [0x110000, +64K)', 1, 0, 0x110000n, K64, 'mem', K64, 0),
  row('create slot 2 adjacent below it at [0xf0000, +64K)', 2, 0, 0xf0000n, K64, 'mem', 2n * K64, 0),
  row('create over the first page of slot 0', 3, 0, 0xff000n, 0x2000n, 'mem', 0n, EEXIST),
  row('create inside slot 0', 3, 0, 0x104000n, 0x1000n, 'mem', 0n, EEXIST),
  row('create straddling slots 0 and 1', 3, 0, 0x10f000n, 0x2000n, 'mem', 0n, EEXIST),
  row('create over the last page of slot 1', 3, 0, 0x11f000n, 0x1000n, 'mem', 0n, EEXIST),
  row('create covering slots 2, 0 and 1', 3, 0, 0xe0000n, 0x50000n, 'mem', 0n, EEXIST),
  row('create slot 3 (8K) adjacent above slot 1', 3, 0, 0x120000n, 0x2000n, 'mem', 3n * K64, 0),
  // Changes to an existing slot.
  row('move slot 3 onto the last page of slot 1', 3, 0, 0x11f000n, 0x2000n, 'mem', 3n * K64, EEXIST),
  row('move slot 3 by one page, overlapping only its own old range', 3, 0, 0x121000n, 0x2000n, 'mem', 3n * K64, 0),
  row('the same request again (no change)', 3, 0, 0x121000n, 0x2000n, 'mem', 3n * K64, 0),
  row('change the memory_size of slot 3', 3, 0, 0x121000n, 0x3000n, 'mem', 3n * K64, EINVAL),
  row('change the memfd offset of slot 3', 3, 0, 0x121000n, 0x2000n, 'mem', 4n * K64, EINVAL),
  row('change the memfd of slot 3 (same offset, another memfd)', 3, 0, 0x121000n, 0x2000n, 'other', 3n * K64, EINVAL),
  row('toggle KVM_MEM_READONLY on slot 3', 3, KVM_MEM_READONLY, 0x121000n, 0x2000n, 'mem', 3n * K64, EINVAL),
  row('toggle KVM_MEM_LOG_DIRTY_PAGES on slot 3 (flags-only change)', 3, KVM_MEM_LOG_DIRTY_PAGES, 0x121000n, 0x2000n, 'mem', 3n * K64, 0),
  row('move slot 3 and clear KVM_MEM_LOG_DIRTY_PAGES at once', 3, 0, 0x200000n, 0x2000n, 'mem', 3n * K64, 0),
  row('change slot 3 with bad flags', 3, KVM_MEM_GUEST_MEMFD, 0x200000n, 0x2000n, 'mem', 3n * K64, EINVAL, /flags/),
  row('delete slot 3', 3, 0, 0n, 0n, 'none', 0n, 0),
  row('delete slot 3 again', 3, 0, 0n, 0n, 'none', 0n, EINVAL, /does not exist/),
  row('create slot 3 anew where slot 3 was', 3, 0, 0x200000n, 0x2000n, 'mem', 3n * K64, 0),
  row('create slot 4 on the same memfd pages as slot 0 (aliasing is allowed)', 4, 0, 0x300000n, K64, 'mem', 0n, 0),
  row('create a KVM_MEM_READONLY slot', 5, KVM_MEM_READONLY, 0x400000n, K64, 'other', 0n, 0),
  row('create a KVM_MEM_READONLY slot from a read-only open of the (sealed) memfd', 6, KVM_MEM_READONLY, 0x600000n, K64, 'readOnly', 0n, 0),
  row(`create slot id KVM_CAP_NR_MEMSLOTS - 1 (${nrMemslots - 1})`, nrMemslots - 1, 0, 0x500000n, K64, 'other', K64, 0),
];

const matrixSteps: Step<Matrix>[] = rows.map((r): Step<Matrix> => [`${r.what}: ${r.errno ? errnoName(r.errno) : 'success'}`, (m) => {
  const got = __vm_set_user_memory_region(m.vm, r.slot, r.flags, r.gpa, r.size, r.fd === 'none' ? -1 : m[r.fd], r.offset);
  const ok = r.errno === 0 ? got.ret === 0 : got.ret === -1 && got.errno === r.errno && (!r.detail || r.detail.test(got.detail));
  if (!ok) TH_LOG(`got ${got.ret === 0 ? 'success' : `${errnoName(got.errno)} (${got.detail})`}`);
  return ok;
}]);

matrixSteps.push(
  ['a 16-byte struct kvm_userspace_memory_region faults: EFAULT', (m) => {
    const short = __vm_ioctl(m.vm, KVM_SET_USER_MEMORY_REGION, Buffer.alloc(16), [m.mem]);
    TH_LOG(`got ${errnoName(short.errno)}`);
    return short.ret === -1 && short.errno === EFAULT;
  }],
  // The model sealed the memfds it accepted: nobody who holds them (a device task, the VMM) can
  // shrink guest RAM under the vCPUs any more.
  ['ftruncate of a slot\'s memfd to 0 fails with EPERM once KVM holds it', (m) => {
    let truncated = 'succeeded';
    try {
      fs.ftruncateSync(m.mem, 0);
    } catch (e) {
      truncated = (e as NodeJS.ErrnoException).code ?? 'failed';
    }
    TH_LOG(truncated);
    return truncated === 'EPERM';
  }],
);

TEST_STEPS(matrix, matrixSteps);

/** A temporary regular file of `size` bytes, already unlinked: only its fd remains. */
function tempFile(size: number): number {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'set_memory_region_test-'));
  const name = path.join(dir, 'ram');
  const fd = fs.openSync(name, 'w+');
  fs.ftruncateSync(fd, size);
  fs.rmSync(dir, { recursive: true });
  return fd;
}

/**
 * A request that is refused changes nothing, the memfd that came with it included: the model seals a
 * memfd against shrinking only once a slot of it is accepted, so the VMM may still resize a memfd it
 * offered in vain (the ioctl-model stress campaign found refused requests sealing it).
 */
const offered = FIXTURE('refused_request', () => {
  const vm = vm_create_barebones();
  const taken = memfd('set_memory_region_test-taken', 0x10000n);
  const fd = memfd('set_memory_region_test-offered', 0x10000n);
  vm_set_user_memory_region(vm, 0, 0, 0x100000n, 0x10000n, taken);
  return { vm, taken, fd, readOnly: fs.openSync(`/proc/self/fd/${fd}`, 'r') };
}, (o) => {
  kvm_vm_free(o.vm);
  [o.taken, o.fd, o.readOnly].forEach(closeQuietly);
});

TEST_STEPS(offered, [
  ['refused requests (beyond the memfd, overlapping, as_id 1) leave the memfd unsealed and the VMM can shrink it', (o) => {
    const errnos = [
      __vm_set_user_memory_region(o.vm, 1, 0, 0x200000n, 0x20000n, o.fd),
      __vm_set_user_memory_region(o.vm, 1, 0, 0x108000n, 0x10000n, o.fd),
      __vm_set_user_memory_region(o.vm, 0x10001, 0, 0x200000n, 0x10000n, o.fd),
    ].map((r) => (r.ret === 0 ? 'success' : errnoName(r.errno)));
    const unsealed = (getSeals(o.fd) & F_SEAL_SHRINK) === 0;
    const shrunk = resizeFile(o.fd, 0x8000n);
    TH_LOG(`got ${errnos.join(', ')}; ${unsealed ? 'unsealed' : 'sealed'}; shrink ${shrunk === 0 ? 'succeeded' : errnoName(-shrunk)}`);
    return errnos.join() === 'EINVAL,EEXIST,EINVAL' && unsealed && shrunk === 0;
  }],
  ['a read-only open of that memfd still cannot back a KVM_MEM_READONLY slot (no seal can be added through it)', (o) => {
    const ro = __vm_set_user_memory_region(o.vm, 2, KVM_MEM_READONLY, 0x300000n, 0x8000n, o.readOnly);
    TH_LOG(`got ${ro.ret === 0 ? 'success' : `${errnoName(ro.errno)} (${ro.detail})`}`);
    return ro.ret === -1 && ro.errno === EINVAL && /sealed/.test(ro.detail);
  }],
  ['a valid request with it then succeeds and seals it', (o) => {
    const good = __vm_set_user_memory_region(o.vm, 2, 0, 0x300000n, 0x8000n, o.fd);
    TH_LOG(`got ${good.ret === 0 ? 'success' : errnoName(good.errno)}, seals 0x${getSeals(o.fd).toString(16)}`);
    return good.ret === 0 && (getSeals(o.fd) & F_SEAL_SHRINK) !== 0;
  }],
]);

/** test_add_max_memory_regions: KVM_CAP_NR_MEMSLOTS slots of 2 MiB from one memfd, then one more. */
const maxRegions = FIXTURE('max_memory_regions', () => ({
  vm: vm_create_barebones(),
  mem: memfd('max_memory_regions', BigInt(nrMemslots + 1) * MAX_REGIONS_SIZE),
}), ({ vm, mem }) => {
  kvm_vm_free(vm);
  closeQuietly(mem);
});

TEST_STEPS(maxRegions, [
  [`KVM_CAP_NR_MEMSLOTS (${nrMemslots}) slots can be added`, ({ vm, mem }) => {
    pr_info(`Allowed number of memory slots: ${nrMemslots}`);
    pr_info(`Adding slots 0..${nrMemslots - 1}, each memory region with ${MAX_REGIONS_SIZE >> 10n}K size`);
    const t0 = process.hrtime.bigint();
    let failed = '';
    for (let slot = 0; slot < nrMemslots && !failed; slot++) {
      const at = BigInt(slot) * MAX_REGIONS_SIZE;
      const r = __vm_set_user_memory_region(vm, slot, 0, at, MAX_REGIONS_SIZE, mem, at);
      if (r.ret !== 0) failed = `slot ${slot}: ${errnoName(r.errno)} (${r.detail})`;
    }
    pr_info(`${nrMemslots} slots took ${Number((process.hrtime.bigint() - t0) / 1000000n)} ms ${failed}`);
    return !failed;
  }],
  ['adding one more memory slot fails with EINVAL', ({ vm, mem }) => {
    const at = BigInt(nrMemslots) * MAX_REGIONS_SIZE;
    const r = __vm_set_user_memory_region(vm, nrMemslots, 0, at, MAX_REGIONS_SIZE, mem, at);
    TH_LOG(`got ${r.ret === 0 ? 'success' : errnoName(r.errno)}`);
    return r.ret === -1 && r.errno === EINVAL;
  }],
]);

interface MmioStats {
  exits: number;
  /** Exits that were not an 8-byte read of MEM_REGION_GPA. */
  unexpected: string[];
}

/**
 * The kernel test's vcpu_worker loop: answer every KVM_EXIT_MMIO read with MMIO_VAL until a ucall
 * arrives, which is returned (a guest assertion fails the test). `onMmio` runs before each answer.
 */
function run_until_ucall(vcpu: KvmVcpu, stats: MmioStats, onMmio?: (n: number) => void): Ucall {
  for (;;) {
    if (exit_reason(vcpu) === KVM_EXIT_MMIO) {
      const m = run_mmio(vcpu);
      stats.exits++;
      if (m.isWrite || m.len !== 8 || m.physAddr !== MEM_REGION_GPA) {
        stats.unexpected.push(`${m.isWrite ? 'write' : 'read'} len ${m.len} at 0x${m.physAddr.toString(16)}`);
      }
      le_store(m.data, 8, MMIO_VAL);
      onMmio?.(stats.exits);
      vcpu_run(vcpu);
      continue;
    }
    TEST_ASSERT(exit_reason(vcpu) === KVM_EXIT_IO, `unexpected exit reason ${exit_reason(vcpu)}`);
    const uc = get_ucall(vcpu);
    if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
    return uc;
  }
}

/** Let the guest spin, change its slot under it, and collect the exits until its next ucall. */
function change_while_spinning(vcpu: KvmVcpu, stats: MmioStats, change: () => void): Ucall {
  __vcpu_run_start(vcpu);
  msleep(SPIN_MS);
  change();
  const r = __vcpu_run_wait(vcpu);
  TEST_ASSERT(r.ret === 0, `KVM_RUN failed: ${errnoName(r.errno)} ${r.detail}`);
  return run_until_ucall(vcpu, stats);
}

function synced(uc: Ucall, stage: number, val: bigint): boolean {
  return uc.cmd === UCALL_SYNC && uc.args[1] === BigInt(stage) && uc.args[2] === val;
}

interface Mover {
  vm: KvmVm;
  vcpu: KvmVcpu;
  /** Our view of the region's first 8 bytes, wherever the slot is mapped in the guest. */
  hva: Uint8Array;
  stats: MmioStats;
}

/** guest_code_move_memory_region, run to its GUEST_SYNC(0) over a 2-page slot at MEM_REGION_GPA. */
const mover = FIXTURE('move_memory_region', (): Mover => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_code_move_memory_region);
  const region = vm_userspace_mem_region_add(vm, MEM_REGION_GPA, MEM_REGION_SLOT, 2, 0);
  region.bytes.fill(0);
  vcpu_args_set(vcpu, MEM_REGION_GPA);
  const stats: MmioStats = { exits: 0, unexpected: [] };
  vcpu_run(vcpu);
  TEST_ASSERT(synced(run_until_ucall(vcpu, stats), 0, 0n), 'the guest reaches GUEST_SYNC(0)');
  return { vm, vcpu, hva: region.bytes.subarray(0, 8), stats };
}, ({ vm }) => kvm_vm_free(vm));

TEST_STEPS(mover, [
  // Shift the base GPA by a page: MEM_REGION_GPA now reads the region's second page, so the guest
  // must not see the 2 written at the region's start; it sees the 1 once the slot is back.
  ['the guest reads RAM all through a misaligned move and back, never the 2 at the moved offset', ({ vm, vcpu, hva, stats }) => {
    const uc = change_while_spinning(vcpu, stats, () => {
      vm_mem_region_move(vm, MEM_REGION_SLOT, MEM_REGION_GPA - BigInt(PAGE_SIZE));
      le_store(hva, 8, 2n);
      msleep(SPIN_MS);
      le_store(hva, 8, 1n);
      vm_mem_region_move(vm, MEM_REGION_SLOT, MEM_REGION_GPA);
    });
    TH_LOG(`got ${uc.args[2]}, ${stats.exits} MMIO exits`);
    return synced(uc, 1, 1n) && stats.exits === 0;
  }],
  [`once the slot is moved away, the guest's read exits KVM_EXIT_MMIO and sees 0x${MMIO_VAL.toString(16)}`, ({ vm, vcpu, stats }) => {
    const uc = change_while_spinning(vcpu, stats, () => vm_mem_region_move(vm, MEM_REGION_SLOT, FAR_GPA));
    TH_LOG(`${stats.exits} exits`);
    return synced(uc, 2, MMIO_VAL) && stats.exits >= 1;
  }],
  ['moving the slot back while the guest reads MMIO gives it RAM again', (s) => {
    const { vm, vcpu, hva, stats } = s;
    const before = stats.exits;
    vcpu_run(vcpu);
    const uc = run_until_ucall(vcpu, stats, (n) => {
      if (n === before + 3) {
        le_store(hva, 8, 3n);
        vm_mem_region_move(vm, MEM_REGION_SLOT, MEM_REGION_GPA);
      }
    });
    TH_LOG(`got ${uc.args[2]} after ${stats.exits - before} exits`);
    return synced(uc, 3, 3n) && stats.exits === before + 3;
  }],
  [`once the slot is deleted, the guest's read exits KVM_EXIT_MMIO and sees 0x${MMIO_VAL.toString(16)}`, ({ vm, vcpu, stats }) => {
    const beforeDelete = stats.exits;
    const uc = change_while_spinning(vcpu, stats, () => vm_mem_region_delete(vm, MEM_REGION_SLOT));
    return synced(uc, 4, MMIO_VAL) && stats.exits > beforeDelete;
  }],
  [`every KVM_EXIT_MMIO was an 8-byte read at 0x${MEM_REGION_GPA.toString(16)}`, ({ vcpu, stats }) => {
    vcpu_run(vcpu);
    const uc = run_until_ucall(vcpu, stats);
    TEST_ASSERT_EQ(uc.cmd, UCALL_DONE, 'the guest finishes');
    if (stats.unexpected.length) TH_LOG(stats.unexpected.slice(0, 3).join(', '));
    return stats.unexpected.length === 0;
  }],
]);

interface ReadOnly {
  vm: KvmVm;
  vcpu: KvmVcpu;
  bytes: Uint8Array;
}

/** guest_code_readonly over a 1-page KVM_MEM_READONLY slot holding READONLY_PATTERN. */
const readOnlySlot = FIXTURE('readonly_memory_region', (): ReadOnly => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_code_readonly);
  const region = vm_userspace_mem_region_add(vm, READONLY_GPA, READONLY_SLOT, 1, KVM_MEM_READONLY);
  le_store(region.bytes, 8, READONLY_PATTERN);
  vcpu_args_set(vcpu, READONLY_GPA);
  return { vm, vcpu, bytes: region.bytes };
}, ({ vm }) => kvm_vm_free(vm));

TEST_STEPS(readOnlySlot, [
  ['the guest reads the RAM of a KVM_MEM_READONLY slot', ({ vcpu }) => {
    vcpu_run(vcpu);
    const uc = get_ucall(vcpu);
    TH_LOG(`got 0x${uc.args[2]?.toString(16)}`);
    return synced(uc, 1, READONLY_PATTERN);
  }],
  ['a guest write to it exits KVM_EXIT_MMIO with is_write, len 8, phys_addr and data', ({ vcpu }) => {
    vcpu_run(vcpu);
    const m = run_mmio(vcpu);
    const data = m.data.subarray(0, 8).every((b, i) => b === Number((0xdeadbeefn >> BigInt(8 * i)) & 0xffn));
    TH_LOG(`exit ${exit_reason(vcpu)}, len ${m.len}`);
    return exit_reason(vcpu) === KVM_EXIT_MMIO && m.isWrite && m.len === 8 && m.physAddr === READONLY_GPA && data;
  }],
  ['the write did not reach the slot\'s memory', ({ vcpu, bytes }) => {
    vcpu_run(vcpu);
    const ok = synced(get_ucall(vcpu), 2, READONLY_PATTERN) && bytes[0] === 0x88;
    vcpu_run(vcpu);
    TEST_ASSERT_EQ(get_ucall(vcpu).cmd, UCALL_DONE);
    return ok;
  }],
]);

if (require.main === module) void test_harness_run();
