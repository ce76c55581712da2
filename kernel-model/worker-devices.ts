// How the VM describes its bus devices (ioeventfd, ioregion) to vCPU threads, and how a vCPU thread
// builds its own instance of one.
//
// The VM validates and keeps the authoritative device list on the main thread; each vCPU thread gets
// a description with fds dup'ed for it and builds its own IoDevice from it here, so no fd is ever
// shared between threads and closing one never races with another thread using it.

import type { BusName, IoDevice } from './io-bus';
import { ioeventfdDevice, type IoeventfdFields } from './ioeventfd-device';
import { createIoregionDevice } from './ioregion-device';
import type { IoregionFields } from './ioregionfd-shared';
import type { VcpuPort } from './vcpu-port';

/** Where a device sits: a bus, an address and a length (0 = exact-address match; u64, hence bigint). */
interface Placement {
  bus: BusName;
  addr: bigint;
  len: bigint;
}

/** What a feature says about a new device: its placement and its kind's own fields. */
export type DeviceFields = Placement & (IoregionFields | IoeventfdFields);

/** A registered device (the VM's record of it). */
export type DeviceInfo = DeviceFields & { key: number };

/** A device as the VM describes it to one vCPU thread, with fds dup'ed for (and owned by) that thread. */
export type DeviceDesc = DeviceInfo & { fds: number[] };

export interface WorkerDevice {
  bus: BusName;
  dev: IoDevice;
  /** Release the thread's fds. */
  close(): void;
}

export function createWorkerDevice(desc: DeviceDesc, port: VcpuPort): WorkerDevice {
  return desc.kind === 'ioregion' ? createIoregionDevice(desc, port) : ioeventfdDevice(desc);
}
