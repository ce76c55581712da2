// The system fd ("/dev/kvm"): API version, capabilities, VM creation; the kernel-model's lifetime.

import * as os from 'os';
import { ObjectCountsType } from '../proto/control';
import { EINVAL } from '../proto/errno';
import {
  KVM_API_VERSION, KVM_CAP_CHECK_EXTENSION_VM, KVM_CAP_ENABLE_CAP_VM, KVM_CAP_HLT, KVM_CAP_IMMEDIATE_EXIT,
  KVM_CAP_MAX_VCPU_ID, KVM_CAP_MAX_VCPUS, KVM_CAP_NR_MEMSLOTS, KVM_CAP_NR_VCPUS, KVM_CAP_READONLY_MEM,
  KVM_CAP_USER_MEMORY, KVM_CHECK_EXTENSION, KVM_CREATE_VM, KVM_EMU_GET_OBJECT_COUNTS, KVM_GET_API_VERSION, KVM_GET_VCPU_MMAP_SIZE,
  KVM_MAX_VCPU_IDS, KVM_MAX_VCPUS, KVM_SET_IOREGION, KVM_USER_MEM_SLOTS, KVM_VCPU_MMAP_SIZE,
} from '../proto/kvm-uapi';
import { controlSocketpair, fail, Handler, nameControlSocket, SocketServer } from './server';
import { Vm, VmFeature } from './vm';
import { liveVcpuCount } from './vcpu';
import { vcpuThreadCounts } from './vcpu-pool';

/** Model options a user may change (the RFC never fixed its numbers). */
export interface KvmOptions {
  /** KVM_CAP_IOREGIONFD's number: 191 in the RFC, 195 / 206 in other trees. */
  ioregionfdCap: number;
  /** KVM_SET_IOREGION's ioctl number (0x4040AE49 in the RFC). */
  setIoregionIoctl: number;
  /** How long a vCPU spins for an ioregionfd reply before it blocks, in ns (0 = never); like kvm.ko's halt_poll_ns. */
  ioregionfdPollNs: number;
}

/** A feature may add capabilities (cap number -> value) besides its VM hooks. */
export interface KvmFeature extends VmFeature {
  caps?: (opts: KvmOptions) => Record<number, number>;
}

export class KvmSystem {
  private readonly vms = new Set<Vm>();
  private readonly caps: Map<number, number>;
  /** Held so the system socket's poll handle lives as long as the system. */
  private readonly server: SocketServer;
  private readonly ioctlAliases = new Map<number, number>();

  private readonly pollNs: number;

  constructor(fd: number, private readonly features: KvmFeature[], opts: KvmOptions, private readonly onExit: () => void) {
    this.pollNs = opts.ioregionfdPollNs;
    if (opts.setIoregionIoctl !== KVM_SET_IOREGION) {
      // The RFC's number then means nothing; the user's number reaches the KVM_SET_IOREGION handler.
      this.ioctlAliases.set(opts.setIoregionIoctl, KVM_SET_IOREGION);
      this.ioctlAliases.set(KVM_SET_IOREGION, 0);
    }
    this.caps = new Map<number, number>([
      [KVM_CAP_USER_MEMORY, 1],
      [KVM_CAP_HLT, 1],
      [KVM_CAP_NR_VCPUS, Math.min(os.cpus().length, KVM_MAX_VCPUS)],
      [KVM_CAP_MAX_VCPUS, KVM_MAX_VCPUS],
      [KVM_CAP_MAX_VCPU_ID, KVM_MAX_VCPU_IDS],
      [KVM_CAP_NR_MEMSLOTS, KVM_USER_MEM_SLOTS],
      [KVM_CAP_READONLY_MEM, 1],
      [KVM_CAP_IMMEDIATE_EXIT, 1],
      [KVM_CAP_ENABLE_CAP_VM, 1],
      [KVM_CAP_CHECK_EXTENSION_VM, 1],
    ]);
    for (const f of features) for (const [cap, v] of Object.entries(f.caps?.(opts) ?? {})) this.caps.set(Number(cap), v);
    nameControlSocket(fd);
    this.server = new SocketServer(fd, this.handle, () => void this.shutdown());
  }

  checkExtension = (cap: bigint): number => (cap > 0xffffffffn ? 0 : (this.caps.get(Number(cap)) ?? 0));

  private readonly handle: Handler = (req) => {
    switch (req.request) {
      case KVM_GET_API_VERSION:
        if (req.arg) throw fail(EINVAL, `KVM_GET_API_VERSION takes no argument, got ${req.arg}`);
        return { ret: KVM_API_VERSION };
      case KVM_CHECK_EXTENSION:
        return { ret: this.checkExtension(req.arg) };
      case KVM_GET_VCPU_MMAP_SIZE:
        if (req.arg) throw fail(EINVAL, `KVM_GET_VCPU_MMAP_SIZE takes no argument, got ${req.arg}`);
        return { ret: KVM_VCPU_MMAP_SIZE };
      case KVM_CREATE_VM: {
        if (req.arg !== 0n) throw fail(EINVAL, `VM type ${req.arg} is not supported (only 0, KVM_X86_DEFAULT_VM)`);
        const [ours, theirs] = controlSocketpair();
        this.vms.add(new Vm(ours, this.features, this.checkExtension, this.ioctlAliases, (vm) => this.vms.delete(vm), this.pollNs));
        return { ret: 0, fds: [theirs] };
      }
      case KVM_EMU_GET_OBJECT_COUNTS: {
        const t = vcpuThreadCounts();
        const counts = { vms: this.vms.size, vcpus: liveVcpuCount(), vcpuThreads: t.threads, idleVcpuThreads: t.idle };
        return { ret: 0, data: ObjectCountsType.encode(counts).finish() };
      }
      default:
        // x86's kvm_arch_dev_ioctl answers unknown system ioctls with EINVAL (measured on a real /dev/kvm).
        throw fail(EINVAL, `unknown system ioctl 0x${req.request.toString(16)}`);
    }
  };

  /** The system fd closed: destroy every VM, then end the process. */
  private async shutdown(): Promise<void> {
    this.server.close();
    await Promise.all([...this.vms].map((vm) => vm.destroy()));
    this.onExit();
  }
}
