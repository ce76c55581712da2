// kvm_util for this model: the VMM-side API selftests (and any VMM) use, after
// tools/testing/selftests/kvm/lib/kvm_util.c. `__x()` returns the raw ioctl result, `x()` asserts.
//
// "/dev/kvm" is the kernel-model process: opening it spawns one, and the fd we hold is its system
// socket. Guest code is a function exported by a compiled module; the vCPU thread loads that module
// (the model's "load the test's own ELF"), so test programs must only run main() when they are
// the main module: `if (require.main === module) main();`.

import { ChildProcess, spawn } from 'child_process';
import * as path from 'path';
import { refuseInGuestContext } from '../../../proto/guest-cpu';
import { encodeRequest, GuestEntryType, ioctlAwaitReply, ioctlMessage, ioctlRaw, IoctlResult } from '../../../proto/control';
import { EINTR, errnoName, strerror } from '../../../proto/errno';
import {
  EMU_ATTN_KICK, ENABLE_CAP, exitReasonName, KVM_CAP_IMMEDIATE_EXIT, KVM_CHECK_EXTENSION, KVM_CREATE_VCPU,
  KVM_CREATE_VM, KVM_EMU_SET_GUEST_ENTRY, KVM_EXIT_INTERNAL_ERROR, KVM_ENABLE_CAP, KVM_GET_REGS, KVM_GET_VCPU_MMAP_SIZE, KVM_RUN,
  KVM_SET_REGS, KVM_SET_USER_MEMORY_REGION, MEMREGION, PAGE_SIZE, REGS, RegName, RUN,
} from '../../../proto/kvm-uapi';
import { close, closeQuietly, eventfdWrite, mapShared, Mapping, memfd, sendMessage, socketpair, unmap, unmapWhenUnreachable } from '../../../proto/os';
import { TEST_ASSERT, TEST_FAIL, TEST_REQUIRE } from './test_util';

export const KVM_DEV_PATH = '/dev/kvm';
/** Default guest memory of vm_create(): slot 0 at GPA 0. */
export const DEFAULT_GUEST_MEMORY = 4 * 1024 * 1024;
/** Where vm_alloc() hands out guest memory from (below it: free for tests, the ucall pool). */
export const GUEST_HEAP_START = 0x200000n;

const KERNEL_MODEL = path.join(__dirname, '..', '..', '..', 'kernel-model', 'main.js');
const kernelModels = new Map<number, ChildProcess>();

export interface OpenKvmOptions {
  /** Extra kernel-model arguments, e.g. ['--ioregionfd-cap', '206']. */
  args?: string[];
}

/**
 * open("/dev/kvm"): spawn a kernel-model process and return its system fd. The process exits when
 * this fd is closed (close_kvm_dev) and dies with us, so it never outlives the VMM.
 */
export function open_kvm_dev_path(opts: OpenKvmOptions = {}): number {
  refuseInGuestContext('open_kvm_dev_path()');
  const [ours, theirs] = socketpair('seqpacket');
  const child = spawn(process.execPath, ['--enable-source-maps', KERNEL_MODEL, ...(opts.args ?? [])], {
    stdio: ['ignore', 'inherit', 'inherit', theirs],
  });
  closeQuietly(theirs);
  // The child must not keep our event loop alive: it ends when our fds close.
  child.unref();
  kernelModels.set(ours, child);
  return ours;
}

/** The pid of the kernel-model process behind a system fd from open_kvm_dev_path (until close_kvm_dev). */
export function kvm_dev_pid(fd: number): number | undefined {
  return kernelModels.get(fd)?.pid;
}

/** Close a system fd from open_kvm_dev_path: the kernel-model destroys its VMs and exits. */
export function close_kvm_dev(fd: number): void {
  kernelModels.delete(fd);
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

export interface MemRegion {
  slot: number;
  flags: number;
  gpa: bigint;
  size: number;
  /** The memfd backing the region and our MAP_SHARED view of it. */
  fd: number;
  offset: number;
  mapping: Mapping;
  bytes: Uint8Array;
}

export interface KvmVm {
  kvmFd: number;
  fd: number;
  regions: Map<number, MemRegion>;
  vcpus: KvmVcpu[];
  /** Bump allocator for vm_alloc(). */
  heapNext: bigint;
  heapEnd: bigint;
  /** kvm_vm_free() ran: the VM's fds are closed and its memory is no longer reachable through it. */
  freed?: boolean;
}

export interface KvmVcpu {
  id: number;
  fd: number;
  vm: KvmVm;
  /** The shared kvm_run page(s), KVM_GET_VCPU_MMAP_SIZE bytes. */
  run: DataView;
  runBytes: Uint8Array;
  runMapping: Mapping;
  runFd: number;
  kickFd: number;
  /**
   * The detail of the last KVM_RUN's reply: for KVM_EXIT_INTERNAL_ERROR, the guest's exception with its
   * stack (the kernel-model runs with source maps, so it names .ts lines).
   */
  exitDetail: string;
}

/** KVM_CREATE_VM only: no memory, no vCPUs. */
export function vm_create_barebones(kvmFd = kvm_fd()): KvmVm {
  const r = kvm_ioctl(kvmFd, KVM_CREATE_VM, 0, 'KVM_CREATE_VM');
  return { kvmFd, fd: r.ret, regions: new Map(), vcpus: [], heapNext: 0n, heapEnd: 0n };
}

/**
 * A VM with slot 0 (DEFAULT_GUEST_MEMORY plus extra bytes) at GPA 0 and the ucall pool set up, ready
 * for vCPUs. Like kvm_util, every VM requires KVM_CAP_IMMEDIATE_EXIT.
 */
export function vm_create(extraBytes = 0): KvmVm {
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IMMEDIATE_EXIT), 'kvm_has_cap(KVM_CAP_IMMEDIATE_EXIT)');
  const vm = vm_create_barebones();
  const size = DEFAULT_GUEST_MEMORY + Math.ceil(extraBytes / PAGE_SIZE) * PAGE_SIZE;
  vm_userspace_mem_region_add(vm, 0n, 0, size / PAGE_SIZE, 0);
  vm.heapNext = GUEST_HEAP_START;
  vm.heapEnd = BigInt(size);
  return vm;
}

/** vm_create() plus vCPU 0 running guest_code. */
export function vm_create_with_one_vcpu(guest_code: GuestCode): [KvmVm, KvmVcpu] {
  const vm = vm_create();
  return [vm, vm_vcpu_add(vm, 0, guest_code)];
}

/** vm_create() plus n vCPUs (ids 0..n-1) all running guest_code. */
export function vm_create_with_vcpus(n: number, guest_code: GuestCode): [KvmVm, KvmVcpu[]] {
  const vm = vm_create();
  const vcpus = [];
  for (let i = 0; i < n; i++) vcpus.push(vm_vcpu_add(vm, i, guest_code));
  return [vm, vcpus];
}

/** Close the VM fd (the kernel-model destroys the VM) and everything we hold for it. */
export function kvm_vm_free(vm: KvmVm): void {
  // Views a test still holds (region.bytes, vcpu.run) stay readable until they are garbage: unmapping
  // now would turn a late read into SIGSEGV. kvm_util's own accessors refuse a freed VM.
  for (const v of vm.vcpus) {
    unmapWhenUnreachable(v.runMapping);
    closeQuietly(v.fd);
    closeQuietly(v.runFd);
    closeQuietly(v.kickFd);
  }
  vm.vcpus = [];
  for (const r of vm.regions.values()) {
    unmapWhenUnreachable(r.mapping);
    closeQuietly(r.fd);
  }
  vm.regions.clear();
  closeQuietly(vm.fd);
  vm.freed = true;
}

export function __vm_ioctl(vm: KvmVm, request: number, arg?: bigint | number | Uint8Array, extraFds?: number[]): IoctlResult {
  return __kvm_ioctl(vm.fd, request, arg, extraFds);
}

export function vm_ioctl(vm: KvmVm, request: number, arg?: bigint | number | Uint8Array, name?: string, extraFds?: number[]): IoctlResult {
  return kvm_ioctl(vm.fd, request, arg, name, extraFds);
}

/** KVM_CHECK_EXTENSION on the VM fd. */
export function vm_check_cap(vm: KvmVm, cap: number): number {
  return vm_ioctl(vm, KVM_CHECK_EXTENSION, cap, 'KVM_CHECK_EXTENSION').ret;
}

/** struct kvm_enable_cap. */
export function kvm_enable_cap_struct(cap: number, args: bigint[] = [], flags = 0): Buffer {
  const b = Buffer.alloc(ENABLE_CAP.SIZE);
  b.writeUInt32LE(cap, ENABLE_CAP.cap);
  b.writeUInt32LE(flags, ENABLE_CAP.flags);
  args.forEach((a, i) => b.writeBigUInt64LE(BigInt.asUintN(64, a), ENABLE_CAP.args + 8 * i));
  return b;
}

export function __vm_enable_cap(vm: KvmVm, cap: number, arg0 = 0n): IoctlResult {
  return __vm_ioctl(vm, KVM_ENABLE_CAP, kvm_enable_cap_struct(cap, [arg0]));
}

export function vm_enable_cap(vm: KvmVm, cap: number, arg0 = 0n): void {
  vm_ioctl(vm, KVM_ENABLE_CAP, kvm_enable_cap_struct(cap, [arg0]), 'KVM_ENABLE_CAP');
}

// ---- memory -----------------------------------------------------------------------------------

/** struct kvm_userspace_memory_region; userspace_addr = offset into the memfd passed beside it. */
export function kvm_userspace_memory_region(slot: number, flags: number, gpa: bigint, size: bigint, offset: bigint): Buffer {
  const b = Buffer.alloc(MEMREGION.SIZE);
  b.writeUInt32LE(slot >>> 0, MEMREGION.slot);
  b.writeUInt32LE(flags >>> 0, MEMREGION.flags);
  b.writeBigUInt64LE(BigInt.asUintN(64, gpa), MEMREGION.guest_phys_addr);
  b.writeBigUInt64LE(BigInt.asUintN(64, size), MEMREGION.memory_size);
  b.writeBigUInt64LE(BigInt.asUintN(64, offset), MEMREGION.userspace_addr);
  return b;
}

/** KVM_SET_USER_MEMORY_REGION, raw. memFd = -1 sends no memfd (valid for deletes). */
export function __vm_set_user_memory_region(vm: KvmVm, slot: number, flags: number, gpa: bigint, size: bigint, memFd: number, offset = 0n): IoctlResult {
  return __vm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, kvm_userspace_memory_region(slot, flags, gpa, size, offset), memFd >= 0 ? [memFd] : []);
}

export function vm_set_user_memory_region(vm: KvmVm, slot: number, flags: number, gpa: bigint, size: bigint, memFd: number, offset = 0n): void {
  const r = __vm_set_user_memory_region(vm, slot, flags, gpa, size, memFd, offset);
  TEST_ASSERT(r.ret === 0, `KVM_SET_USER_MEMORY_REGION failed, rc: ${r.ret} errno: ${r.errno} (${errnoName(r.errno)}): ${r.detail}`, r.errno);
}

/** A new memfd-backed region of npages at gpa in `slot`, mapped here too (addr_gpa2hva works on it). */
export function vm_userspace_mem_region_add(vm: KvmVm, gpa: bigint, slot: number, npages: number, flags: number): MemRegion {
  const size = npages * PAGE_SIZE;
  const fd = memfd(`guest-slot-${slot}`, size);
  vm_set_user_memory_region(vm, slot, flags, gpa, BigInt(size), fd);
  const mapping = mapShared(fd, size);
  const region = { slot, flags, gpa, size, fd, offset: 0, mapping, bytes: new Uint8Array(mapping.buffer) };
  vm.regions.set(slot, region);
  return region;
}

function region(vm: KvmVm, slot: number): MemRegion {
  const r = vm.regions.get(slot);
  TEST_ASSERT(r !== undefined, `no memory region in slot ${slot}`);
  return r;
}

export function vm_mem_region_move(vm: KvmVm, slot: number, newGpa: bigint): void {
  const r = region(vm, slot);
  vm_set_user_memory_region(vm, slot, r.flags, newGpa, BigInt(r.size), r.fd, BigInt(r.offset));
  r.gpa = newGpa;
}

export function vm_mem_region_set_flags(vm: KvmVm, slot: number, flags: number): void {
  const r = region(vm, slot);
  vm_set_user_memory_region(vm, slot, flags, r.gpa, BigInt(r.size), r.fd, BigInt(r.offset));
  r.flags = flags;
}

export function vm_mem_region_delete(vm: KvmVm, slot: number): void {
  const r = region(vm, slot);
  vm_set_user_memory_region(vm, slot, 0, 0n, 0n, -1);
  unmap(r.mapping);
  closeQuietly(r.fd);
  vm.regions.delete(slot);
}

/** Our view of guest memory at gpa: `len` bytes inside one region (asserts that they are). */
export function addr_gpa2hva(vm: KvmVm, gpa: bigint, len = 1): Uint8Array {
  TEST_ASSERT(!vm.freed, `addr_gpa2hva(0x${gpa.toString(16)}): the VM was freed (kvm_vm_free), its memory is gone`);
  for (const r of vm.regions.values()) {
    if (gpa >= r.gpa && gpa + BigInt(len) <= r.gpa + BigInt(r.size)) {
      const off = Number(gpa - r.gpa);
      return r.bytes.subarray(off, off + len);
    }
  }
  return TEST_FAIL(`GPA 0x${gpa.toString(16)} (+${len}) is not in any memory region`);
}

/** vm_vaddr_alloc: `size` bytes of zeroed guest memory from slot 0's heap (identity mapped: GVA = GPA). */
export function vm_alloc(vm: KvmVm, size: number, align = 8): bigint {
  const a = BigInt(align);
  const gpa = (vm.heapNext + a - 1n) / a * a;
  TEST_ASSERT(gpa + BigInt(size) <= vm.heapEnd, `vm_alloc: ${size} bytes do not fit the guest heap`);
  vm.heapNext = gpa + BigInt(size);
  addr_gpa2hva(vm, gpa, size).fill(0);
  return gpa;
}

// ---- vCPUs ------------------------------------------------------------------------------------

/** Guest code: a function exported by a module that is loaded (require()d) in this process. */
export type GuestCode = (...args: bigint[]) => unknown;

/** Find the module and export name of a guest function, as the vCPU thread must load it by path. */
export function guest_entry_of(fn: GuestCode): { module: string; exportName: string } {
  for (const [file, mod] of Object.entries(require.cache)) {
    const exp = mod?.exports as Record<string, unknown> | undefined;
    if (!exp || typeof exp !== 'object') continue;
    for (const [name, value] of Object.entries(exp)) {
      if (value === fn) return { module: file, exportName: name };
    }
  }
  return TEST_FAIL(`guest code '${fn.name}' is not exported by any loaded module: export it from the test program`);
}

/** KVM_CREATE_VCPU and map its kvm_run, raw: returns the ioctl result when it fails. */
export function __vm_vcpu_add(vm: KvmVm, id: number | bigint): KvmVcpu | IoctlResult {
  const r = __vm_ioctl(vm, KVM_CREATE_VCPU, BigInt(id));
  if (r.ret < 0) return r;
  const [fd, runFd, kickFd] = r.fds;
  const size = kvm_ioctl(vm.kvmFd, KVM_GET_VCPU_MMAP_SIZE, 0, 'KVM_GET_VCPU_MMAP_SIZE').ret;
  const runMapping = mapShared(runFd, size);
  const vcpu: KvmVcpu = {
    id: Number(id), fd, vm, run: new DataView(runMapping.buffer), runBytes: new Uint8Array(runMapping.buffer),
    runMapping, runFd, kickFd, exitDetail: '',
  };
  vm.vcpus.push(vcpu);
  return vcpu;
}

/** Add a vCPU and, if given, point it at guest_code. */
export function vm_vcpu_add(vm: KvmVm, id: number, guest_code?: GuestCode): KvmVcpu {
  const v = __vm_vcpu_add(vm, id);
  if (!('vm' in v)) return TEST_FAIL(`KVM_CREATE_VCPU ${id} failed, errno ${v.errno} (${errnoName(v.errno)}): ${v.detail}`, v.errno);
  if (guest_code) vcpu_set_entry(v, guest_code);
  return v;
}

/** KVM_EMU_SET_GUEST_ENTRY: the model's "set RIP to guest_code". */
export function vcpu_set_entry(vcpu: KvmVcpu, guest_code: GuestCode): void {
  const { module, exportName } = guest_entry_of(guest_code);
  const data = GuestEntryType.encode({ module, export: exportName }).finish();
  vcpu_ioctl(vcpu, KVM_EMU_SET_GUEST_ENTRY, data, 'KVM_EMU_SET_GUEST_ENTRY');
}

export function __vcpu_ioctl(vcpu: KvmVcpu, request: number, arg?: bigint | number | Uint8Array): IoctlResult {
  return __kvm_ioctl(vcpu.fd, request, arg);
}

export function vcpu_ioctl(vcpu: KvmVcpu, request: number, arg?: bigint | number | Uint8Array, name?: string): IoctlResult {
  return kvm_ioctl(vcpu.fd, request, arg, name);
}

export type Regs = Record<RegName, bigint>;

export function vcpu_regs_get(vcpu: KvmVcpu): Regs {
  const r = vcpu_ioctl(vcpu, KVM_GET_REGS, 0, 'KVM_GET_REGS');
  const regs = {} as Regs;
  REGS.forEach((name, i) => (regs[name] = r.data.readBigUInt64LE(8 * i)));
  return regs;
}

export function vcpu_regs_set(vcpu: KvmVcpu, regs: Regs): void {
  const b = Buffer.alloc(8 * REGS.length);
  REGS.forEach((name, i) => b.writeBigUInt64LE(BigInt.asUintN(64, regs[name]), 8 * i));
  vcpu_ioctl(vcpu, KVM_SET_REGS, b, 'KVM_SET_REGS');
}

/** Up to 6 arguments for guest_code, in the x86-64 argument registers. */
export function vcpu_args_set(vcpu: KvmVcpu, ...args: (bigint | number)[]): void {
  TEST_ASSERT(args.length <= 6, `vcpu_args_set: at most 6 arguments, got ${args.length}`);
  const regs = vcpu_regs_get(vcpu);
  const order: RegName[] = ['rdi', 'rsi', 'rdx', 'rcx', 'r8', 'r9'];
  args.forEach((a, i) => (regs[order[i]] = BigInt(a)));
  vcpu_regs_set(vcpu, regs);
}

const RUN_MESSAGE = encodeRequest({ request: KVM_RUN });

/** The raw KVM_RUN: ret 0 with exit_reason valid, or -1 and errno (EINTR for immediate_exit / a kick). */
export function __vcpu_run(vcpu: KvmVcpu): IoctlResult {
  const r = ioctlMessage(vcpu.fd, RUN_MESSAGE);
  vcpu.exitDetail = r.detail;
  return r;
}

/** Send KVM_RUN without waiting (for tests that kick a vCPU blocked in KVM_RUN). */
export function __vcpu_run_start(vcpu: KvmVcpu): void {
  sendMessage(vcpu.fd, RUN_MESSAGE);
}

/** Wait for the reply of a KVM_RUN sent with __vcpu_run_start. */
export function __vcpu_run_wait(vcpu: KvmVcpu): IoctlResult {
  const r = ioctlAwaitReply(vcpu.fd);
  vcpu.exitDetail = r.detail;
  return r;
}

/** KVM_RUN, retried while it fails with EINTR, asserting success (kvm_util's vcpu_run). */
export function vcpu_run(vcpu: KvmVcpu): void {
  for (;;) {
    const r = __vcpu_run(vcpu);
    if (r.ret === 0) return;
    if (r.errno === EINTR) continue;
    throw failRun(r);
  }
}

function failRun(r: IoctlResult): never {
  return TEST_FAIL(`KVM_RUN IOCTL failed, rc: ${r.ret} errno: ${r.errno} (${strerror(r.errno)})${r.detail ? `: ${r.detail}` : ''}`, r.errno);
}

/** Complete a pending PIO/MMIO exit without running more guest code (immediate_exit = 1). */
export function vcpu_run_complete_io(vcpu: KvmVcpu): void {
  vcpu.run.setUint8(RUN.immediate_exit, 1);
  const r = __vcpu_run(vcpu);
  vcpu.run.setUint8(RUN.immediate_exit, 0);
  TEST_ASSERT(r.ret === -1 && r.errno === EINTR, `KVM_RUN IOCTL didn't exit immediately, rc: ${r.ret}, errno: ${r.errno}`);
}

/** Signal the vCPU thread: a blocked or next KVM_RUN returns EINTR with KVM_EXIT_INTR. */
export function vcpu_kick(vcpu: KvmVcpu): void {
  Atomics.or(new Int32Array(vcpu.run.buffer, RUN.emu_kick, 1), 0, EMU_ATTN_KICK);
  eventfdWrite(vcpu.kickFd);
}

export function exit_reason(vcpu: KvmVcpu): number {
  return vcpu.run.getUint32(RUN.exit_reason, true);
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
  const r = vcpu.run;
  return {
    physAddr: r.getBigUint64(RUN.mmio_phys_addr, true),
    data: vcpu.runBytes.subarray(RUN.mmio_data, RUN.mmio_data + 8),
    len: r.getUint32(RUN.mmio_len, true),
    isWrite: r.getUint8(RUN.mmio_is_write) !== 0,
  };
}

/** kvm_run.io of the current KVM_EXIT_IO. `data` views count*size bytes at data_offset. */
export function run_io(vcpu: KvmVcpu): { direction: number; size: number; port: number; count: number; dataOffset: number; data: Uint8Array } {
  const r = vcpu.run;
  const size = r.getUint8(RUN.io_size);
  const count = r.getUint32(RUN.io_count, true);
  const dataOffset = Number(r.getBigUint64(RUN.io_data_offset, true));
  return {
    direction: r.getUint8(RUN.io_direction), size, port: r.getUint16(RUN.io_port, true), count, dataOffset,
    data: vcpu.runBytes.subarray(dataOffset, dataOffset + size * count),
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
