// mmio_exit_test: guest accesses to a GPA with no memslot and no device exit KVM_EXIT_MMIO with
// phys_addr, len, is_write and (for writes) data; a read completes on the next KVM_RUN with the low
// `len` bytes the VMM put in mmio.data, even when that KVM_RUN has immediate_exit set (it then returns
// EINTR without running the guest); an access that crosses a page boundary is split into per-page
// fragments, RAM handled in the kernel and each MMIO fragment exiting with its own len (x86's
// emulator_read_write, checked on a real /dev/kvm).

import { EINTR, errnoName } from '../../proto/errno';
import { AccessSize } from '../../proto/guest-cpu';
import { KVM_EXIT_MMIO, RUN } from '../../proto/kvm-uapi';
import { FIXTURE, Step, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { GUEST_DONE, GUEST_SYNC, GUEST_SYNC_ARGS, mmio_read, mmio_write, readl, readq, writeq } from './lib/guest';
import {
  __vcpu_run, addr_gpa2hva, DEFAULT_GUEST_MEMORY, exit_reason, KvmVcpu, KvmVm, kvm_vm_free, le_store, le_value, run_mmio,
  vcpu_run, vm_create_with_one_vcpu, vm_userspace_mem_region_add,
} from './lib/kvm_util';
import { get_ucall, REPORT_GUEST_ASSERT, Ucall, UCALL_ABORT, UCALL_DONE, UCALL_SYNC } from './lib/ucall_common';
import { TEST_ASSERT, TEST_ASSERT_EQ } from './lib/test_util';

const SIZES: AccessSize[] = [1, 2, 4, 8];
/** Unmapped: every access here is MMIO. */
const MMIO_GPA = 0xc0000000n;
const WRITE_VALUE = 0x8877665544332211n;
/** What the VMM answers reads with (all 8 bytes of mmio.data; the guest must see only `len` of them). */
const READ_DATA = 0xf8f7f6f5f4f3f2f1n;
/** End of vm_create()'s slot 0: RAM below, nothing above. */
const RAM_END = BigInt(DEFAULT_GUEST_MEMORY);
/** A one-page slot here, so the page below it is MMIO and the page itself RAM. */
const RAM_PAGE = 0xd0001000n;
const RAM_PAGE_SLOT = 1;
/** Two unmapped pages. */
const MMIO_PAGES = 0xe0000000n;
const COMPLETION_GPA = MMIO_GPA + 0x200n;

const mask = (len: number): bigint => (1n << BigInt(8 * len)) - 1n;

export function guest_code(): void {
  for (const size of SIZES) mmio_write(MMIO_GPA + BigInt(size * 0x10), size, WRITE_VALUE);
  for (const size of SIZES) GUEST_SYNC_ARGS(1, size, mmio_read(MMIO_GPA + 0x100n + BigInt(size * 0x10), size));
  GUEST_SYNC_ARGS(2, readq(RAM_END - 4n));
  writeq(RAM_END - 2n, WRITE_VALUE);
  GUEST_SYNC(3);
  GUEST_SYNC_ARGS(4, readq(RAM_PAGE - 6n));
  GUEST_SYNC_ARGS(5, readq(MMIO_PAGES + 0xffcn));
  GUEST_SYNC_ARGS(6, readl(COMPLETION_GPA));
  GUEST_DONE();
}

function mmio_is(vcpu: KvmVcpu, gpa: bigint, len: number, isWrite: boolean): boolean {
  const m = run_mmio(vcpu);
  return exit_reason(vcpu) === KVM_EXIT_MMIO && m.physAddr === gpa && m.len === len && m.isWrite === isWrite;
}

function describe(vcpu: KvmVcpu): string {
  if (exit_reason(vcpu) !== KVM_EXIT_MMIO) return `exit reason ${exit_reason(vcpu)}`;
  const m = run_mmio(vcpu);
  return `${m.isWrite ? 'write' : 'read'} len ${m.len} at 0x${m.physAddr.toString(16)}${m.isWrite ? ` data 0x${le_value(m.data, m.len).toString(16)}` : ''}`;
}

/** Run to the next ucall, which must be GUEST_SYNC(stage); returns its first argument after the stage. */
function sync_value(vcpu: KvmVcpu, stage: number): bigint {
  vcpu_run(vcpu);
  const uc: Ucall = get_ucall(vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  TEST_ASSERT(uc.cmd === UCALL_SYNC && uc.args[1] === BigInt(stage), `expected GUEST_SYNC(${stage}), got ucall ${uc.cmd} stage ${uc.args[1]} (${describe(vcpu)})`);
  return uc.args[2];
}

interface Rig {
  vm: KvmVm;
  vcpu: KvmVcpu;
}

const rig = FIXTURE('guest', (): Rig => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_code);
  vm_userspace_mem_region_add(vm, RAM_PAGE, RAM_PAGE_SLOT, 1, 0);
  return { vm, vcpu };
}, (s) => kvm_vm_free(s.vm));

const steps: Step<Rig>[] = [];

for (const size of SIZES) {
  const gpa = MMIO_GPA + BigInt(size * 0x10);
  steps.push([`a ${size}-byte MMIO write exits KVM_EXIT_MMIO: phys_addr 0x${gpa.toString(16)}, len ${size}, is_write, data 0x${(WRITE_VALUE & mask(size)).toString(16)}`, ({ vcpu }) => {
    vcpu_run(vcpu);
    const data = le_value(run_mmio(vcpu).data, size);
    TH_LOG(describe(vcpu));
    return mmio_is(vcpu, gpa, size, true) && data === (WRITE_VALUE & mask(size));
  }]);
}

for (const size of SIZES) {
  const gpa = MMIO_GPA + 0x100n + BigInt(size * 0x10);
  steps.push([`a ${size}-byte MMIO read exits KVM_EXIT_MMIO (phys_addr 0x${gpa.toString(16)}, len ${size}, !is_write) and completes with the low ${size} bytes of mmio.data`, ({ vcpu }) => {
    vcpu_run(vcpu);
    const fields = mmio_is(vcpu, gpa, size, false);
    TH_LOG(describe(vcpu));
    le_store(run_mmio(vcpu).data, 8, READ_DATA);
    // The guest reports what it read together with the size, at its next GUEST_SYNC(1).
    vcpu_run(vcpu);
    const uc = get_ucall(vcpu);
    if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
    const got = uc.args[3];
    TH_LOG(`the guest read 0x${got?.toString(16)}`);
    return fields && uc.cmd === UCALL_SYNC && uc.args[2] === BigInt(size) && got === (READ_DATA & mask(size));
  }]);
}

steps.push(
  // RAM -> MMIO read: the last 4 bytes of slot 0, then 4 bytes of MMIO at RAM_END.
  [`an 8-byte read across the end of RAM reads 4 bytes of RAM and exits for the 4-byte MMIO fragment at 0x${RAM_END.toString(16)}`, ({ vm, vcpu }) => {
    addr_gpa2hva(vm, RAM_END - 4n, 4).set([0xa1, 0xa2, 0xa3, 0xa4]);
    vcpu_run(vcpu);
    const fields = mmio_is(vcpu, RAM_END, 4, false);
    TH_LOG(describe(vcpu));
    le_store(run_mmio(vcpu).data, 8, READ_DATA);
    const got = sync_value(vcpu, 2);
    TH_LOG(`the guest read 0x${got.toString(16)}`);
    return fields && got === 0xf4f3f2f1a4a3a2a1n;
  }],
  // RAM -> MMIO write.
  ['an 8-byte write across the end of RAM stores 2 bytes in RAM and exits for the 6-byte MMIO fragment with the upper bytes', ({ vm, vcpu }) => {
    vcpu_run(vcpu);
    const fields = mmio_is(vcpu, RAM_END, 6, true) && le_value(run_mmio(vcpu).data, 6) === WRITE_VALUE >> 16n;
    TH_LOG(describe(vcpu));
    const ramPart = addr_gpa2hva(vm, RAM_END - 2n, 2);
    const ramOk = ramPart[0] === 0x11 && ramPart[1] === 0x22;
    sync_value(vcpu, 3);
    return fields && ramOk;
  }],
  // MMIO -> RAM read.
  ['an 8-byte read from MMIO into a RAM page exits for the 6-byte MMIO fragment only, then reads RAM', ({ vm, vcpu }) => {
    addr_gpa2hva(vm, RAM_PAGE, 2).set([0xc1, 0xc2]);
    vcpu_run(vcpu);
    const fields = mmio_is(vcpu, RAM_PAGE - 6n, 6, false);
    TH_LOG(describe(vcpu));
    le_store(run_mmio(vcpu).data, 8, READ_DATA);
    const got = sync_value(vcpu, 4);
    TH_LOG(`the guest read 0x${got.toString(16)}`);
    return fields && got === 0xc2c1f6f5f4f3f2f1n;
  }],
  // MMIO -> MMIO read: one exit per page.
  ['an 8-byte read across two MMIO pages exits twice, 4 bytes per page, and combines both answers', ({ vcpu }) => {
    vcpu_run(vcpu);
    let fields = mmio_is(vcpu, MMIO_PAGES + 0xffcn, 4, false);
    TH_LOG(describe(vcpu));
    le_store(run_mmio(vcpu).data, 8, 0xe4e3e2e1n);
    vcpu_run(vcpu);
    fields &&= mmio_is(vcpu, MMIO_PAGES + 0x1000n, 4, false);
    TH_LOG(describe(vcpu));
    le_store(run_mmio(vcpu).data, 8, 0xf4f3f2f1n);
    const got = sync_value(vcpu, 5);
    TH_LOG(`the guest read 0x${got.toString(16)}`);
    return fields && got === 0xf4f3f2f1e4e3e2e1n;
  }],
  // Completion by a KVM_RUN with immediate_exit set.
  ['KVM_RUN with immediate_exit completes a pending MMIO read, then fails EINTR with exit_reason left KVM_EXIT_MMIO', ({ vcpu }) => {
    vcpu_run(vcpu);
    const fields = mmio_is(vcpu, COMPLETION_GPA, 4, false);
    le_store(run_mmio(vcpu).data, 8, 0x11223344n);
    vcpu.kvmRun.setUint8(RUN.immediate_exit, 1);
    const r = __vcpu_run(vcpu);
    vcpu.kvmRun.setUint8(RUN.immediate_exit, 0);
    const stillMmio = exit_reason(vcpu) === KVM_EXIT_MMIO;
    // Whatever is in mmio.data now must not matter: the read was completed by the EINTR'd KVM_RUN.
    le_store(run_mmio(vcpu).data, 8, 0xdeadbeefn);
    const got = sync_value(vcpu, 6);
    TH_LOG(`KVM_RUN: ${r.ret === 0 ? 'success' : errnoName(r.errno)}; the guest got 0x${got.toString(16)}`);
    vcpu_run(vcpu);
    TEST_ASSERT_EQ(get_ucall(vcpu).cmd, UCALL_DONE, 'the guest ends with GUEST_DONE');
    return fields && r.ret === -1 && r.errno === EINTR && stillMmio && got === 0x11223344n;
  }],
);

TEST_STEPS(rig, steps);

if (require.main === module) void test_harness_run();
