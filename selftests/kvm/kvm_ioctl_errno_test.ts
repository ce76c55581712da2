// kvm_ioctl_errno_test: the errno of every way an ioctl on the system, VM and vCPU fds can fail, each
// measured on a real x86 /dev/kvm where KVM has an equivalent: arguments an ioctl does not take,
// unknown ioctls (system and vCPU fds answer EINVAL, the VM fd ENOTTY, whatever the argument), one
// fd's ioctls sent to another kind of fd, short argument structs (EFAULT), KVM_ENABLE_CAP's
// capability and flags checks. Then the model's own failure modes: a malformed control message is
// EINVAL and the fd keeps working; once the system fd is closed the kernel-model exits, and every VM
// and vCPU ioctl fails with EIO, as on a dead VM.

import * as fs from 'fs';
import { encodeRequest, GuestEntryType, ioctlAwaitReply, IoctlResult } from '../../proto/control';
import { E2BIG, EFAULT, EINVAL, EIO, ENOTTY, errnoName } from '../../proto/errno';
import {
  IOC, KVM_API_VERSION, KVM_CAP_NR_MEMSLOTS, KVM_CAP_NR_VCPUS, KVM_CAP_USER_MEMORY, KVM_CHECK_EXTENSION,
  KVM_CREATE_VCPU, KVM_CREATE_VM, KVM_EMU_SET_GUEST_ENTRY, KVM_ENABLE_CAP, KVM_GET_API_VERSION, KVM_GET_REGS,
  KVM_GET_VCPU_MMAP_SIZE, KVM_RUN, KVM_SET_REGS, KVM_SET_USER_MEMORY_REGION, KVM_USER_MEM_SLOTS, KVM_VCPU_MMAP_SIZE,
  REGS_SIZE,
} from '../../proto/kvm-uapi';
import { MAX_MESSAGE, sendMessage, sendRaw } from '../../proto/os';
import { EXPECT, FIXTURE, TEST_F, test_harness_run, TH_LOG } from '../kselftest_harness';
import {
  __kvm_ioctl, close_kvm_dev, kvm_dev_pid, kvm_enable_cap_struct, kvm_fd, kvm_vm_free, KvmVcpu, KvmVm, open_kvm_dev_path,
  vcpu_regs_get, vm_create_barebones, vm_vcpu_add,
} from './lib/kvm_util';
import { msleep, TEST_ASSERT } from './lib/test_util';

/** An ioctl number no KVM version uses (type KVMIO, nr 0xd0). */
const KVM_UNKNOWN_IOCTL = IOC(0, 0xae, 0xd0, 0);
/** Not a valid protobuf message: a length-delimited field that claims 5 bytes and has 1. */
const MALFORMED = Buffer.from([0x12, 0x05, 0x01]);
const KVM_CAP_UNKNOWN = 0x1000;

/** The three kinds of fd: the system fd, a VM's and a vCPU's. */
interface Fds {
  sys: number;
  vm: KvmVm;
  vcpu: KvmVcpu;
}

const fds = FIXTURE('fds', (): Fds => {
  const vm = vm_create_barebones();
  return { sys: kvm_fd(), vm, vcpu: vm_vcpu_add(vm, 0) };
}, (s) => kvm_vm_free(s.vm));

/** Which fd of the fixture a case uses. */
const fdOf = { S: (s: Fds) => s.sys, V: (s: Fds) => s.vm.fd, C: (s: Fds) => s.vcpu.fd };

interface Case {
  what: string;
  fd: keyof typeof fdOf;
  request: number;
  arg?: bigint | number | Uint8Array;
  /** The expected errno, or (with errno 0) the expected return value. */
  errno: number;
  ret?: number;
}

function outcome(r: IoctlResult): string {
  return r.ret < 0 ? `${errnoName(r.errno)}${r.detail ? ` (${r.detail})` : ''}` : `returned ${r.ret}`;
}

function check(c: Case, s: Fds): void {
  const r = __kvm_ioctl(fdOf[c.fd](s), c.request, c.arg ?? 0n);
  const ok = c.errno ? r.ret === -1 && r.errno === c.errno : r.ret === c.ret;
  EXPECT(ok, `${c.errno ? errnoName(c.errno) : `ret ${c.ret}`}, got ${outcome(r)}`);
}

/** Send raw bytes as an ioctl message and collect the answer. */
function send_raw(fd: number, bytes: Buffer): IoctlResult {
  TEST_ASSERT(sendRaw(fd, bytes) === bytes.length, `send of ${bytes.length} raw bytes`);
  return ioctlAwaitReply(fd);
}

function send_malformed(fd: number): IoctlResult {
  return send_raw(fd, MALFORMED);
}

function fds_still_work(sys: number, vm: KvmVm, vcpu: KvmVcpu): boolean {
  return __kvm_ioctl(sys, KVM_GET_API_VERSION).ret === KVM_API_VERSION &&
    __kvm_ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY).ret === 1 &&
    __kvm_ioctl(vcpu.fd, KVM_GET_REGS).data.length === REGS_SIZE;
}

function guest_entry(module: string, exportName: string): Uint8Array {
  return GuestEntryType.encode({ module, export: exportName }).finish();
}

/** Not a function: guest entry points must be. */
export const not_a_function = 42;

/** True once the process is gone or a zombie (it exited; we, its parent, have not reaped it yet). */
function exited(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

const shortRegs = Buffer.alloc(16, 0xff);
const cases: Case[] = [
  // The system fd.
  { what: 'KVM_GET_API_VERSION', fd: 'S', request: KVM_GET_API_VERSION, errno: 0, ret: KVM_API_VERSION },
  { what: 'KVM_GET_API_VERSION with an argument', fd: 'S', request: KVM_GET_API_VERSION, arg: 1, errno: EINVAL },
  { what: 'KVM_GET_VCPU_MMAP_SIZE', fd: 'S', request: KVM_GET_VCPU_MMAP_SIZE, errno: 0, ret: KVM_VCPU_MMAP_SIZE },
  { what: 'KVM_GET_VCPU_MMAP_SIZE with an argument', fd: 'S', request: KVM_GET_VCPU_MMAP_SIZE, arg: 1, errno: EINVAL },
  { what: 'KVM_CHECK_EXTENSION of an unknown capability', fd: 'S', request: KVM_CHECK_EXTENSION, arg: KVM_CAP_UNKNOWN, errno: 0, ret: 0 },
  { what: 'KVM_CHECK_EXTENSION of 2^32 + KVM_CAP_USER_MEMORY (not truncated to 32 bits)', fd: 'S', request: KVM_CHECK_EXTENSION, arg: (1n << 32n) + BigInt(KVM_CAP_USER_MEMORY), errno: 0, ret: 0 },
  { what: 'KVM_CREATE_VM of type 99', fd: 'S', request: KVM_CREATE_VM, arg: 99, errno: EINVAL },
  { what: 'KVM_CREATE_VM of type 1 (KVM_X86_SW_PROTECTED_VM, unsupported)', fd: 'S', request: KVM_CREATE_VM, arg: 1, errno: EINVAL },
  { what: 'an unknown ioctl on the system fd', fd: 'S', request: KVM_UNKNOWN_IOCTL, errno: EINVAL },
  { what: 'KVM_CREATE_VCPU on the system fd', fd: 'S', request: KVM_CREATE_VCPU, errno: EINVAL },
  { what: 'KVM_RUN on the system fd', fd: 'S', request: KVM_RUN, errno: EINVAL },
  { what: 'KVM_GET_REGS on the system fd', fd: 'S', request: KVM_GET_REGS, errno: EINVAL },
  // The VM fd.
  { what: 'an unknown ioctl on a VM fd', fd: 'V', request: KVM_UNKNOWN_IOCTL, errno: ENOTTY },
  { what: 'KVM_SET_REGS (an _IOW ioctl) on a VM fd with no argument: unknown there, so ENOTTY, not EFAULT', fd: 'V', request: KVM_SET_REGS, errno: ENOTTY },
  { what: 'KVM_GET_API_VERSION on a VM fd', fd: 'V', request: KVM_GET_API_VERSION, errno: ENOTTY },
  { what: 'KVM_CREATE_VM on a VM fd', fd: 'V', request: KVM_CREATE_VM, errno: ENOTTY },
  { what: 'KVM_GET_VCPU_MMAP_SIZE on a VM fd', fd: 'V', request: KVM_GET_VCPU_MMAP_SIZE, errno: ENOTTY },
  { what: 'KVM_RUN on a VM fd', fd: 'V', request: KVM_RUN, errno: ENOTTY },
  { what: 'KVM_GET_REGS on a VM fd', fd: 'V', request: KVM_GET_REGS, errno: ENOTTY },
  { what: 'KVM_CHECK_EXTENSION(KVM_CAP_NR_MEMSLOTS) on a VM fd', fd: 'V', request: KVM_CHECK_EXTENSION, arg: KVM_CAP_NR_MEMSLOTS, errno: 0, ret: KVM_USER_MEM_SLOTS },
  { what: 'KVM_CHECK_EXTENSION of an unknown capability on a VM fd', fd: 'V', request: KVM_CHECK_EXTENSION, arg: KVM_CAP_UNKNOWN, errno: 0, ret: 0 },
  { what: 'KVM_ENABLE_CAP of an unknown capability', fd: 'V', request: KVM_ENABLE_CAP, arg: kvm_enable_cap_struct(KVM_CAP_UNKNOWN), errno: EINVAL },
  { what: 'KVM_ENABLE_CAP of a capability that cannot be enabled (KVM_CAP_NR_VCPUS)', fd: 'V', request: KVM_ENABLE_CAP, arg: kvm_enable_cap_struct(KVM_CAP_NR_VCPUS), errno: EINVAL },
  { what: 'KVM_ENABLE_CAP with flags 1', fd: 'V', request: KVM_ENABLE_CAP, arg: kvm_enable_cap_struct(KVM_CAP_UNKNOWN, [], 1), errno: EINVAL },
  { what: 'KVM_ENABLE_CAP with an 8-byte struct kvm_enable_cap', fd: 'V', request: KVM_ENABLE_CAP, arg: Buffer.alloc(8), errno: EFAULT },
  { what: 'KVM_SET_USER_MEMORY_REGION with a 16-byte struct', fd: 'V', request: KVM_SET_USER_MEMORY_REGION, arg: Buffer.alloc(16), errno: EFAULT },
  { what: 'KVM_CREATE_VCPU with id KVM_MAX_VCPU_IDS', fd: 'V', request: KVM_CREATE_VCPU, arg: 4096, errno: EINVAL },
  // The vCPU fd.
  { what: 'an unknown ioctl on a vCPU fd', fd: 'C', request: KVM_UNKNOWN_IOCTL, errno: EINVAL },
  { what: 'KVM_CHECK_EXTENSION on a vCPU fd', fd: 'C', request: KVM_CHECK_EXTENSION, arg: KVM_CAP_USER_MEMORY, errno: EINVAL },
  { what: 'KVM_GET_API_VERSION on a vCPU fd', fd: 'C', request: KVM_GET_API_VERSION, errno: EINVAL },
  { what: 'KVM_CREATE_VCPU on a vCPU fd', fd: 'C', request: KVM_CREATE_VCPU, arg: 1, errno: EINVAL },
  { what: 'KVM_SET_USER_MEMORY_REGION on a vCPU fd', fd: 'C', request: KVM_SET_USER_MEMORY_REGION, arg: Buffer.alloc(32), errno: EINVAL },
  { what: 'KVM_SET_REGS with a 16-byte struct kvm_regs', fd: 'C', request: KVM_SET_REGS, arg: shortRegs, errno: EFAULT },
  { what: 'KVM_EMU_SET_GUEST_ENTRY of a module that does not exist', fd: 'C', request: KVM_EMU_SET_GUEST_ENTRY, arg: guest_entry('/nonexistent/guest.js', 'guest_code'), errno: EINVAL },
  { what: 'KVM_EMU_SET_GUEST_ENTRY of an export that is not a function', fd: 'C', request: KVM_EMU_SET_GUEST_ENTRY, arg: guest_entry(__filename, 'not_a_function'), errno: EINVAL },
  { what: 'KVM_EMU_SET_GUEST_ENTRY with a malformed GuestEntry message', fd: 'C', request: KVM_EMU_SET_GUEST_ENTRY, arg: MALFORMED, errno: EINVAL },
  // ioctl(fd, 0) encodes to a zero-length message, which must not read as EOF.
  { what: 'ioctl 0 with no argument (an empty message) on the system fd', fd: 'S', request: 0, errno: EINVAL },
  { what: 'ioctl 0 with no argument (an empty message) on a VM fd', fd: 'V', request: 0, errno: ENOTTY },
  { what: 'ioctl 0 with no argument (an empty message) on a vCPU fd', fd: 'C', request: 0, errno: EINVAL },
  { what: 'an argument over the 64 KiB message limit is refused by the client', fd: 'V', request: KVM_SET_USER_MEMORY_REGION, arg: Buffer.alloc(MAX_MESSAGE + 1), errno: E2BIG },
];
for (const c of cases) TEST_F(fds, `${c.what}: ${c.errno ? errnoName(c.errno) : `returns ${c.ret}`}`, (s) => check(c, s));

TEST_F(fds, 'the short KVM_SET_REGS changed no register', (s) => {
  __kvm_ioctl(s.vcpu.fd, KVM_SET_REGS, shortRegs);
  const regs = vcpu_regs_get(s.vcpu);
  EXPECT(regs.rax === 0n && regs.rip === 0n && regs.rflags === 2n, `the reset registers, got rax 0x${regs.rax.toString(16)} rip 0x${regs.rip.toString(16)} rflags 0x${regs.rflags.toString(16)}`);
});

// A malformed message is EINVAL, and the fd keeps working.
TEST_F(fds, 'a malformed ioctl message on the system, VM and vCPU fds fails with EINVAL and each fd still serves the next ioctl', ({ sys, vm, vcpu }) => {
  const bad = [send_malformed(sys), send_malformed(vm.fd), send_malformed(vcpu.fd)];
  const after = [
    __kvm_ioctl(sys, KVM_GET_API_VERSION).ret === KVM_API_VERSION,
    __kvm_ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY).ret === 1,
    __kvm_ioctl(vcpu.fd, KVM_GET_REGS).data.length === REGS_SIZE,
  ];
  TH_LOG(bad.map(outcome).join('; '));
  EXPECT(bad.every((r) => r.ret === -1 && r.errno === EINVAL), 'EINVAL on each fd');
  EXPECT(after.every(Boolean), 'each fd to answer the next ioctl');
});

// An empty message and one over the limit, sent raw: E2BIG for the oversized one, and every fd
// keeps working (both used to read as EOF: a dead vCPU thread, a destroyed VM, an exited kernel-model).
TEST_F(fds, 'a raw zero-length message is ioctl 0 on the system, VM and vCPU fds and each fd still serves the next ioctl', ({ sys, vm, vcpu }) => {
  const empty = [sys, vm.fd, vcpu.fd].map((fd) => send_raw(fd, Buffer.alloc(0)));
  TH_LOG(empty.map(outcome).join('; '));
  EXPECT(empty[0].errno === EINVAL && empty[1].errno === ENOTTY && empty[2].errno === EINVAL, 'EINVAL, ENOTTY, EINVAL');
  EXPECT(fds_still_work(sys, vm, vcpu), 'each fd to answer the next ioctl');
});

TEST_F(fds, 'a raw message over 64 KiB fails with E2BIG on the system, VM and vCPU fds and each fd still serves the next ioctl', ({ sys, vm, vcpu }) => {
  const huge = [sys, vm.fd, vcpu.fd].map((fd) => send_raw(fd, Buffer.alloc(MAX_MESSAGE + 4096, 0x5a)));
  TH_LOG(huge.map(outcome).join('; '));
  EXPECT(huge.every((r) => r.ret === -1 && r.errno === E2BIG), 'E2BIG on each fd');
  EXPECT(fds_still_work(sys, vm, vcpu), 'each fd to answer the next ioctl');
});

// And a well-formed message still works after a malformed one on the same socket.
TEST_F(fds, 'a hand-encoded KVM_CHECK_EXTENSION message on the VM fd is answered', ({ vm }) => {
  send_malformed(vm.fd);
  sendMessage(vm.fd, encodeRequest({ request: KVM_CHECK_EXTENSION, arg: BigInt(KVM_CAP_NR_MEMSLOTS) }));
  EXPECT(ioctlAwaitReply(vm.fd).ret === KVM_USER_MEM_SLOTS, `KVM_USER_MEM_SLOTS (${KVM_USER_MEM_SLOTS})`);
});

/** A kernel-model of its own, with a VM and a vCPU, whose system fd the test closes. */
interface Doomed {
  pid: number;
  vm: KvmVm;
  vcpu: KvmVcpu;
}

const doomed = FIXTURE('dead_kernel_model', (): Doomed => {
  const sys = open_kvm_dev_path();
  const pid = kvm_dev_pid(sys);
  TEST_ASSERT(pid !== undefined, 'the kernel-model has a pid');
  const vm = vm_create_barebones(sys);
  const vcpu = vm_vcpu_add(vm, 0);
  TEST_ASSERT(__kvm_ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY).ret === 1, 'the VM answers before');
  close_kvm_dev(sys);
  const deadline = Date.now() + 5000;
  while (!exited(pid) && Date.now() < deadline) msleep(10);
  return { pid, vm, vcpu };
}, (s) => kvm_vm_free(s.vm));

TEST_F(doomed, 'closing the system fd ends the kernel-model process', ({ pid }) => {
  EXPECT(exited(pid), `kernel-model (pid ${pid}) to have exited`);
});

TEST_F(doomed, 'after that, VM ioctls (KVM_CHECK_EXTENSION, KVM_CREATE_VCPU) and vCPU ioctls (KVM_GET_REGS, KVM_RUN) fail with EIO', ({ vm, vcpu }) => {
  const results = [
    __kvm_ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY),
    __kvm_ioctl(vm.fd, KVM_CREATE_VCPU, 1),
    __kvm_ioctl(vcpu.fd, KVM_GET_REGS),
    __kvm_ioctl(vcpu.fd, KVM_RUN),
  ];
  TH_LOG(results.map(outcome).join('; '));
  EXPECT(results.every((r) => r.ret === -1 && r.errno === EIO), 'EIO from every one');
});

if (require.main === module) void test_harness_run();
