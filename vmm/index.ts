// The public VMM library: the KVM objects of this model (Kvm, Vm, Vcpu), the exits a vCPU returns,
// guest memory, ioregionfd (KVM_SET_IOREGION), ioeventfd, irqchip and irqfd, eventfds, and spawning
// device tasks. It talks to the kernel-model only through proto/ (the ioctl control plane).

export { Kvm, type KvmOptions, type ObjectCounts } from './kvm';
export { Vm, type IoregionStats, type MemoryRegion } from './vm';
export { Vcpu, type Regs } from './vcpu';
export type { VcpuExit } from './exit';
export { guestEntryOf, type GuestCode, type GuestEntry } from './guest-entry';
export { EventFd } from './eventfd';
export {
  spawnDeviceTask, type DeviceChannel, type DeviceTask, type DeviceTaskSpec, type ExitStatus, type RegionSpec,
} from './device-task';
export type { Ioeventfd, Ioregion, Irqfd, UserMemoryRegion } from './structs';
export { KvmError } from '../proto/errors';
export type { IoctlResult } from '../proto/control';
export type { Mapping } from '../proto/os';
export type { MemorySpec, Transport } from '../proto/device-task-manifest';
export * from '../proto/kvm-uapi';
