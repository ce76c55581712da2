// kvm_util for this model: the kselftest layer over the VMM library (vmm/), named and shaped after
// tools/testing/selftests/kvm/lib/kvm_util.c. `__x()` returns the raw ioctl result, `x()` asserts
// (a failure is a TEST_ASSERT banner with the errno, exit 254).
//
// "/dev/kvm" is the kernel-model process: opening it spawns one, and the fd we hold is its system
// socket. Guest code is a function exported by a compiled module; the vCPU thread loads that module
// (the model's "load the test's own ELF"), so test programs must only run main() when they are the
// main module: `if (require.main === module) main();` (see vmm/guest-entry.ts for the rules).

import { ioctlRaw, IoctlResult } from '../../../proto/control';
import { KvmError } from '../../../proto/errors';
import { EINTR, strerror } from '../../../proto/errno';
import {
  exitReasonName, KVM_CAP_IMMEDIATE_EXIT, KVM_CHECK_EXTENSION, KVM_CREATE_VCPU, KVM_ENABLE_CAP,
  KVM_EXIT_INTERNAL_ERROR, KVM_SET_USER_MEMORY_REGION, PAGE_SIZE, RUN,
} from '../../../proto/kvm-uapi';
import { close } from '../../../proto/os';
import { GuestCode, guestEntryOf, Kvm, KvmOptions, MemoryRegion, Regs, Vcpu, Vm } from '../../../vmm';
import { kvmEnableCap, kvmUserspaceMemoryRegion } from '../../../vmm/structs';
import { TEST_ASSERT, TEST_FAIL, TEST_REQUIRE } from './test_util';

export type { GuestCode, Regs };
export type KvmVm = Vm;
export type KvmVcpu = Vcpu;
export type MemRegion = MemoryRegion;
export type OpenKvmOptions = KvmOptions;

export const KVM_DEV_PATH = '/dev/kvm';
/** Default guest memory of vm_create(): slot 0 at GPA 0. */
export const DEFAULT_GUEST_MEMORY = 4 * 1024 * 1024;
/** Where vm_alloc() hands out guest memory from (below it: free for tests, the ucall pool). */
export const GUEST_HEAP_START = 0x200000n;

/** Run a VMM-library call that must succeed: a KvmError becomes the test's failure banner. */
function must<T>(call: () => T): T {
  try {
    return call();
  } catch (e) {
    if (e instanceof KvmError) return TEST_FAIL(e.message, e.errno);
    throw e;
  }
}

const systems = new Map<number, Kvm>();

/**
 * open("/dev/kvm"): spawn a kernel-model process and return its system fd. The process exits when
 * this fd is closed (close_kvm_dev) and dies with us, so it never outlives the VMM.
 */
export function open_kvm_dev_path(opts: OpenKvmOptions = {}): number {
  const kvm = Kvm.open(opts);
  systems.set(kvm.fd, kvm);
  return kvm.fd;
}

/** The Kvm object behind a system fd from open_kvm_dev_path. */
export function kvm_of(fd: number): Kvm {
  return systems.get(fd) ?? TEST_FAIL(`fd ${fd} is not a system fd from open_kvm_dev_path()`);
}

/** The pid of the kernel-model process behind a system fd from open_kvm_dev_path (until close_kvm_dev). */
export function kvm_dev_pid(fd: number): number | undefined {
  return systems.get(fd)?.pid;
}

/** Close a system fd from open_kvm_dev_path: the kernel-model destroys its VMs and exits. */
export function close_kvm_dev(fd: number): void {
  systems.delete(fd);
  close(fd);
}

let sharedKvmFd = -1;

/** The process-wide system fd kvm_util uses (opened on first use, like kvm_util's cached fd). */
export function kvm_fd(): number {
  if (sharedKvmFd < 0) sharedKvmFd = open_kvm_dev_path();
  return sharedKvmFd;
}

/** The raw ioctl: never throws for an ioctl error (ret -1, errno). */
export function __kvm_ioctl(fd: number, request: number, arg: bigint | number | Uint8Array = 0n, extraFds?: number[]): IoctlResult {
  return ioctlRaw(fd, request, arg, extraFds);
}

function ioctlName(request: number): string {
  return `ioctl 0x${(request >>> 0).toString(16)}`;
}

/** An ioctl that must succeed: a failure is a test assertion (exit 254) with the errno. */
export function kvm_ioctl(fd: number, request: number, arg?: bigint | number | Uint8Array, name = ioctlName(request), extraFds?: number[]): IoctlResult {
  const r = __kvm_ioctl(fd, request, arg, extraFds);
  TEST_ASSERT(r.ret >= 0, `${name} failed, rc: ${r.ret} errno: ${r.errno} (${strerror(r.errno)})${r.detail ? `: ${r.detail}` : ''}`, r.errno);
  return r;
}

/** KVM_CHECK_EXTENSION on the system fd. */
export function kvm_check_cap(cap: number): number {
  return kvm_ioctl(kvm_fd(), KVM_CHECK_EXTENSION, cap, 'KVM_CHECK_EXTENSION').ret;
}

export function kvm_has_cap(cap: number): boolean {
  return kvm_check_cap(cap) > 0;
}

// ---- VMs ------------------------------------------------------------------------------------

/** vm_vaddr_alloc's bump allocator over slot 0 (identity mapped: GVA = GPA), per VM. */
const heaps = new WeakMap<Vm, { next: bigint; end: bigint }>();

/** KVM_CREATE_VM only: no memory, no vCPUs. */
export function vm_create_barebones(kvmFd = kvm_fd()): KvmVm {
  return must(() => kvm_of(kvmFd).createVm());
}

/**
 * A VM with slot 0 (DEFAULT_GUEST_MEMORY plus extra bytes) at GPA 0 and the ucall pool set up, ready
 * for vCPUs. Like kvm_util, every VM requires KVM_CAP_IMMEDIATE_EXIT.
 */
export function vm_create(extraBytes = 0, kvmFd = kvm_fd()): KvmVm {
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IMMEDIATE_EXIT), 'kvm_has_cap(KVM_CAP_IMMEDIATE_EXIT)');
  const vm = vm_create_barebones(kvmFd);
  const size = DEFAULT_GUEST_MEMORY + Math.ceil(extraBytes / PAGE_SIZE) * PAGE_SIZE;
  vm_userspace_mem_region_add(vm, 0n, 0, size / PAGE_SIZE, 0);
  heaps.set(vm, { next: GUEST_HEAP_START, end: BigInt(size) });
  return vm;
}

/** vm_create() plus vCPU 0 running guest_code. */
export function vm_create_with_one_vcpu(guest_code: GuestCode): [KvmVm, KvmVcpu] {
  const vm = vm_create();
  return [vm, vm_vcpu_add(vm, 0, guest_code)];
}

/** vm_create() plus n vCPUs (ids 0..n-1) all running guest_code (on the system fd kvmFd). */
export function vm_create_with_vcpus(n: number, guest_code: GuestCode, kvmFd = kvm_fd()): [KvmVm, KvmVcpu[]] {
  const vm = vm_create(0, kvmFd);
  const vcpus = [];
  for (let i = 0; i < n; i++) vcpus.push(vm_vcpu_add(vm, i, guest_code));
  return [vm, vcpus];
}

/** Close the VM fd (the kernel-model destroys the VM) and everything we hold for it. */
export function kvm_vm_free(vm: KvmVm): void {
  vm.close();
}

export function __vm_ioctl(vm: KvmVm, request: number, arg?: bigint | number | Uint8Array, extraFds?: number[]): IoctlResult {
  return vm.ioctl(request, arg, extraFds);
}

export function vm_ioctl(vm: KvmVm, request: number, arg?: bigint | number | Uint8Array, name?: string, extraFds?: number[]): IoctlResult {
  return kvm_ioctl(vm.fd, request, arg, name, extraFds);
}

/** KVM_CHECK_EXTENSION on the VM fd. */
export function vm_check_cap(vm: KvmVm, cap: number): number {
  return vm_ioctl(vm, KVM_CHECK_EXTENSION, cap, 'KVM_CHECK_EXTENSION').ret;
}

/** struct kvm_enable_cap. */
export const kvm_enable_cap_struct = kvmEnableCap;

export function __vm_enable_cap(vm: KvmVm, cap: number, arg0 = 0n): IoctlResult {
  return __vm_ioctl(vm, KVM_ENABLE_CAP, kvmEnableCap(cap, [arg0]));
}

export function vm_enable_cap(vm: KvmVm, cap: number, arg0 = 0n): void {
  must(() => vm.enableCap(cap, [arg0]));
}

// ---- memory -----------------------------------------------------------------------------------

/** struct kvm_userspace_memory_region; userspace_addr = offset into the memfd passed beside it. */
export function kvm_userspace_memory_region(slot: number, flags: number, gpa: bigint, size: bigint, offset: bigint): Buffer {
  return kvmUserspaceMemoryRegion({ slot, flags, guestPhysAddr: gpa, memorySize: size, offset });
}

/** KVM_SET_USER_MEMORY_REGION, raw. memFd = -1 sends no memfd (valid for deletes). */
export function __vm_set_user_memory_region(vm: KvmVm, slot: number, flags: number, gpa: bigint, size: bigint, memFd: number, offset = 0n): IoctlResult {
  return __vm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, kvm_userspace_memory_region(slot, flags, gpa, size, offset), memFd >= 0 ? [memFd] : []);
}

export function vm_set_user_memory_region(vm: KvmVm, slot: number, flags: number, gpa: bigint, size: bigint, memFd: number, offset = 0n): void {
  must(() => vm.setUserMemoryRegion({ slot, flags, guestPhysAddr: gpa, memorySize: size, offset }, memFd));
}

/** A new memfd-backed region of npages at gpa in `slot`, mapped here too (addr_gpa2hva works on it). */
export function vm_userspace_mem_region_add(vm: KvmVm, gpa: bigint, slot: number, npages: number, flags: number): MemRegion {
  return must(() => vm.addMemory(slot, gpa, npages * PAGE_SIZE, flags));
}

export function vm_mem_region_move(vm: KvmVm, slot: number, newGpa: bigint): void {
  must(() => vm.moveMemory(slot, newGpa));
}

export function vm_mem_region_set_flags(vm: KvmVm, slot: number, flags: number): void {
  must(() => vm.setMemoryFlags(slot, flags));
}

export function vm_mem_region_delete(vm: KvmVm, slot: number): void {
  must(() => vm.removeMemory(slot));
}

/** Our view of guest memory at gpa: `len` bytes inside one region (asserts that they are). */
export function addr_gpa2hva(vm: KvmVm, gpa: bigint, len = 1): Uint8Array {
  TEST_ASSERT(!vm.freed, `addr_gpa2hva(0x${gpa.toString(16)}): the VM was freed (kvm_vm_free), its memory is gone`);
  try {
    return vm.memory(gpa, len);
  } catch (e) {
    return TEST_FAIL(`GPA 0x${gpa.toString(16)} (+${len}): ${(e as Error).message}`);
  }
}

/** vm_vaddr_alloc: `size` bytes of zeroed guest memory from slot 0's heap (identity mapped: GVA = GPA). */
export function vm_alloc(vm: KvmVm, size: number, align = 8): bigint {
  const heap = heaps.get(vm) ?? TEST_FAIL('vm_alloc: the VM has no guest heap (create it with vm_create)');
  const a = BigInt(align);
  const gpa = (heap.next + a - 1n) / a * a;
  TEST_ASSERT(gpa + BigInt(size) <= heap.end, `vm_alloc: ${size} bytes do not fit the guest heap`);
  heap.next = gpa + BigInt(size);
  addr_gpa2hva(vm, gpa, size).fill(0);
  return gpa;
}

// ---- vCPUs ------------------------------------------------------------------------------------

/** Find the module and export name of a guest function, as the vCPU thread must load it by path. */
export function guest_entry_of(fn: GuestCode): { module: string; exportName: string } {
  return must(() => guestEntryOf(fn));
}

/** KVM_CREATE_VCPU and map its kvm_run, raw: returns the ioctl result when it fails. */
export function __vm_vcpu_add(vm: KvmVm, id: number | bigint): KvmVcpu | IoctlResult {
  const r = vm.ioctl(KVM_CREATE_VCPU, BigInt(id));
  if (r.ret < 0) return r;
  const vcpu = new Vcpu(vm, Number(id), r.fds);
  vm.vcpus.push(vcpu);
  return vcpu;
}

/** Add a vCPU and, if given, point it at guest_code. */
export function vm_vcpu_add(vm: KvmVm, id: number, guest_code?: GuestCode): KvmVcpu {
  const v = must(() => vm.createVcpu(id));
  if (guest_code) vcpu_set_entry(v, guest_code);
  return v;
}

/** KVM_EMU_SET_GUEST_ENTRY: the model's "set RIP to guest_code". */
export function vcpu_set_entry(vcpu: KvmVcpu, guest_code: GuestCode): void {
  must(() => vcpu.setEntry(guest_code));
}

export function __vcpu_ioctl(vcpu: KvmVcpu, request: number, arg?: bigint | number | Uint8Array): IoctlResult {
  return vcpu.ioctl(request, arg);
}

export function vcpu_ioctl(vcpu: KvmVcpu, request: number, arg?: bigint | number | Uint8Array, name?: string): IoctlResult {
  return kvm_ioctl(vcpu.fd, request, arg, name);
}

export function vcpu_regs_get(vcpu: KvmVcpu): Regs {
  return must(() => vcpu.getRegs());
}

export function vcpu_regs_set(vcpu: KvmVcpu, regs: Regs): void {
  must(() => vcpu.setRegs(regs));
}

/** Up to 6 arguments for guest_code, in the x86-64 argument registers. */
export function vcpu_args_set(vcpu: KvmVcpu, ...args: (bigint | number)[]): void {
  TEST_ASSERT(args.length <= 6, `vcpu_args_set: at most 6 arguments, got ${args.length}`);
  must(() => vcpu.setArgs(...args));
}

/** The raw KVM_RUN: ret 0 with exit_reason valid, or -1 and errno (EINTR for immediate_exit / a kick). */
export function __vcpu_run(vcpu: KvmVcpu): IoctlResult {
  return vcpu.runRaw();
}

/** Send KVM_RUN without waiting (for tests that kick a vCPU blocked in KVM_RUN). */
export function __vcpu_run_start(vcpu: KvmVcpu): void {
  vcpu.runStart();
}

/** Wait for the reply of a KVM_RUN sent with __vcpu_run_start. */
export function __vcpu_run_wait(vcpu: KvmVcpu): IoctlResult {
  return vcpu.runWait();
}

/** KVM_RUN, retried while it fails with EINTR, asserting success (kvm_util's vcpu_run). */
export function vcpu_run(vcpu: KvmVcpu): void {
  for (;;) {
    const r = __vcpu_run(vcpu);
    if (r.ret === 0) return;
    if (r.errno === EINTR) continue;
    TEST_FAIL(`KVM_RUN IOCTL failed, rc: ${r.ret} errno: ${r.errno} (${strerror(r.errno)})${r.detail ? `: ${r.detail}` : ''}`, r.errno);
  }
}

/** Complete a pending PIO/MMIO exit without running more guest code (immediate_exit = 1). */
export function vcpu_run_complete_io(vcpu: KvmVcpu): void {
  try {
    vcpu.completeIo();
  } catch (e) {
    TEST_FAIL(`KVM_RUN IOCTL didn't exit immediately: ${(e as Error).message}`);
  }
}

/** Signal the vCPU thread: a blocked or next KVM_RUN returns EINTR with KVM_EXIT_INTR. */
export function vcpu_kick(vcpu: KvmVcpu): void {
  vcpu.kick();
}

export function exit_reason(vcpu: KvmVcpu): number {
  return vcpu.kvmRun.getUint32(RUN.exit_reason, true);
}

export function exit_reason_str(reason: number): string {
  return exitReasonName(reason);
}

/** TEST_ASSERT_KVM_EXIT_REASON(vcpu, expected). */
export function TEST_ASSERT_KVM_EXIT_REASON(vcpu: KvmVcpu, expected: number): void {
  const got = exit_reason(vcpu);
  TEST_ASSERT(got === expected, `Wanted KVM exit reason: ${expected} (${exit_reason_str(expected)}), got: ${got} (${exit_reason_str(got)})${guest_failure(vcpu)}`);
}

/** For a vCPU stopped by its guest code failing (KVM_EXIT_INTERNAL_ERROR), the guest's exception and stack, as text to append. */
export function guest_failure(vcpu: KvmVcpu): string {
  return exit_reason(vcpu) === KVM_EXIT_INTERNAL_ERROR && vcpu.exitDetail ? `\n${vcpu.exitDetail}` : '';
}

/** kvm_run.mmio of the current KVM_EXIT_MMIO. `data` is a live view: fill it to complete a read. */
export function run_mmio(vcpu: KvmVcpu): { physAddr: bigint; data: Uint8Array; len: number; isWrite: boolean } {
  const r = vcpu.kvmRun;
  return {
    physAddr: r.getBigUint64(RUN.mmio_phys_addr, true),
    data: vcpu.kvmRunBytes.subarray(RUN.mmio_data, RUN.mmio_data + 8),
    len: r.getUint32(RUN.mmio_len, true),
    isWrite: r.getUint8(RUN.mmio_is_write) !== 0,
  };
}

/** kvm_run.io of the current KVM_EXIT_IO. `data` views count*size bytes at data_offset. */
export function run_io(vcpu: KvmVcpu): { direction: number; size: number; port: number; count: number; dataOffset: number; data: Uint8Array } {
  const r = vcpu.kvmRun;
  const size = r.getUint8(RUN.io_size);
  const count = r.getUint32(RUN.io_count, true);
  const dataOffset = Number(r.getBigUint64(RUN.io_data_offset, true));
  return {
    direction: r.getUint8(RUN.io_direction), size, port: r.getUint16(RUN.io_port, true), count, dataOffset,
    data: vcpu.kvmRunBytes.subarray(dataOffset, dataOffset + size * count),
  };
}

/** Little-endian value of the first `len` bytes of a byte view. */
export function le_value(bytes: Uint8Array, len = bytes.length): bigint {
  let v = 0n;
  for (let i = len - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}

/** Write `value` little-endian into the first `len` bytes of a byte view (to complete a read). */
export function le_store(bytes: Uint8Array, len: number, value: bigint): void {
  for (let i = 0; i < len; i++) bytes[i] = Number((value >> BigInt(8 * i)) & 0xffn);
}
