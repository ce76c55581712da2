// Kvm: the system fd ("/dev/kvm"). Opening it starts a kernel-model process whose system socket this
// object holds; closing it ends that process and every VM in it (api.rst section 4: system ioctls).

import { ChildProcess, spawn } from 'child_process';
import * as path from 'path';
import { declareFdFields, ioctlRaw, IoctlResult, ObjectCountsType } from '../proto/control';
import { KvmError } from '../proto/errors';
import { refuseInGuestContext } from '../proto/guest-cpu';
import {
  IOREGION, KVM_CAP_IOREGIONFD, KVM_CHECK_EXTENSION, KVM_CREATE_VM, KVM_EMU_GET_OBJECT_COUNTS, KVM_GET_API_VERSION, KVM_GET_VCPU_MMAP_SIZE, KVM_SET_IOREGION,
} from '../proto/kvm-uapi';
import { close, closeQuietly, socketpair } from '../proto/os';
import { Vm } from './vm';

const KERNEL_MODEL = path.join(__dirname, '..', 'kernel-model', 'main.js');

/** What a kernel-model holds right now (KVM_EMU_GET_OBJECT_COUNTS). */
export interface ObjectCounts {
  /** VMs not yet destroyed. */
  vms: number;
  /** vCPUs not yet destroyed, in every VM. */
  vcpus: number;
  /** vCPU worker threads, running a vCPU or idle in the pool, and the idle ones. */
  vcpuThreads: number;
  idleVcpuThreads: number;
}

export interface KvmOptions {
  /** KVM_CAP_IOREGIONFD's number in this kernel-model (default 191, the RFC's). */
  ioregionfdCap?: number;
  /** KVM_SET_IOREGION's ioctl number in this kernel-model (default 0x4040AE49, the RFC's). */
  setIoregionIoctl?: number;
  /**
   * How long a vCPU busy-polls for an ioregionfd reply before it blocks, in ns (default 50000; 0 turns
   * polling off). Like kvm.ko's halt_poll_ns: it trades CPU time for latency (README "Performance").
   */
  ioregionfdPollNs?: number;
  /** Extra kernel-model arguments. */
  args?: string[];
}

/** A failed ioctl as KvmError (ret -1 with errno), or the result. */
export function check(r: IoctlResult, ioctl: string): IoctlResult {
  if (r.ret < 0) throw new KvmError(ioctl, r.errno, r.detail);
  return r;
}

export class Kvm {
  /** The system fd: our end of the kernel-model's system socket. */
  readonly fd: number;
  /** The kernel-model process. */
  readonly pid: number;
  readonly ioregionfdCap: number;
  /** The KVM_SET_IOREGION number Vm.setIoregion issues. */
  readonly setIoregionIoctl: number;
  private readonly child: ChildProcess;

  private constructor(fd: number, child: ChildProcess, opts: KvmOptions) {
    this.fd = fd;
    this.child = child;
    this.pid = child.pid!;
    this.ioregionfdCap = opts.ioregionfdCap ?? KVM_CAP_IOREGIONFD;
    this.setIoregionIoctl = (opts.setIoregionIoctl ?? KVM_SET_IOREGION) >>> 0;
    // The client attaches the fds a struct names, under whatever number the ioctl has here.
    declareFdFields(this.setIoregionIoctl, [IOREGION.read_fd, IOREGION.write_fd]);
  }

  /**
   * open("/dev/kvm"): start a kernel-model process and hold its system fd. It exits when close() is
   * called, and dies with this process (PR_SET_PDEATHSIG), so it never outlives its VMM.
   */
  static open(opts: KvmOptions = {}): Kvm {
    refuseInGuestContext('Kvm.open()');
    const poll = opts.ioregionfdPollNs;
    if (poll !== undefined && !(Number.isSafeInteger(poll) && poll >= 0)) {
      throw new RangeError(`Kvm.open: ioregionfdPollNs must be a whole number of ns >= 0, got ${poll}`);
    }
    const args = [...(opts.args ?? [])];
    if (opts.ioregionfdCap !== undefined) args.push('--ioregionfd-cap', String(opts.ioregionfdCap));
    if (opts.ioregionfdPollNs !== undefined) args.push('--ioregionfd-poll-ns', String(opts.ioregionfdPollNs));
    if (opts.setIoregionIoctl !== undefined) args.push('--set-ioregion-ioctl', `0x${(opts.setIoregionIoctl >>> 0).toString(16)}`);
    const [ours, theirs] = socketpair('seqpacket');
    const child = spawn(process.execPath, ['--enable-source-maps', '--expose-gc', KERNEL_MODEL, ...args], { stdio: ['ignore', 'inherit', 'inherit', theirs] });
    closeQuietly(theirs);
    if (child.pid === undefined) {
      closeQuietly(ours);
      throw new Error(`Kvm.open: cannot start the kernel-model (${KERNEL_MODEL})`);
    }
    // The kernel-model must not keep our event loop alive: it ends when our fds close.
    child.unref();
    return new Kvm(ours, child, opts);
  }

  /** The raw ioctl on the system fd: never throws for an ioctl error. */
  ioctl(request: number, arg: bigint | number | Uint8Array = 0n): IoctlResult {
    return ioctlRaw(this.fd, request, arg);
  }

  /** KVM_GET_API_VERSION (12). */
  apiVersion(): number {
    return check(this.ioctl(KVM_GET_API_VERSION), 'KVM_GET_API_VERSION').ret;
  }

  /** KVM_CHECK_EXTENSION: 0 for a capability this kernel-model does not have. */
  checkExtension(cap: number): number {
    return check(this.ioctl(KVM_CHECK_EXTENSION, cap), 'KVM_CHECK_EXTENSION').ret;
  }

  /** KVM_GET_VCPU_MMAP_SIZE: the size of each vCPU's kvm_run mapping. */
  vcpuMmapSize(): number {
    return check(this.ioctl(KVM_GET_VCPU_MMAP_SIZE), 'KVM_GET_VCPU_MMAP_SIZE').ret;
  }

  /** KVM_CREATE_VM: a VM with no memory and no vCPUs (type 0, KVM_X86_DEFAULT_VM). */
  createVm(type = 0): Vm {
    return new Vm(this, check(this.ioctl(KVM_CREATE_VM, type), 'KVM_CREATE_VM').ret);
  }

  /**
   * KVM_EMU_GET_OBJECT_COUNTS: how many VMs, vCPUs and vCPU threads the kernel-model holds. A VM is
   * destroyed asynchronously after its fd closes: poll until `vms` drops.
   */
  objectCounts(): ObjectCounts {
    const r = check(this.ioctl(KVM_EMU_GET_OBJECT_COUNTS), 'KVM_EMU_GET_OBJECT_COUNTS');
    return ObjectCountsType.toObject(ObjectCountsType.decode(r.data), { defaults: true }) as ObjectCounts;
  }

  /** Close the system fd: the kernel-model destroys its VMs and exits. */
  close(): void {
    close(this.fd);
  }

  /** Resolves when the kernel-model process has exited. */
  exited(): Promise<void> {
    return new Promise((resolve) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) resolve();
      else this.child.once('exit', () => resolve());
    });
  }
}
