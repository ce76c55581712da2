// Builds a vCPU thread's own instance of a device registered on the VM (ioeventfd, ioregion, ...).
//
// The VM validates and keeps the authoritative device list on the main thread; each vCPU thread gets
// a description with fds dup'ed for it and builds its own IoDevice from it here, so no fd is ever
// shared between threads and closing one never races with another thread using it.

import type { IoDevice } from './io-bus';
import { ioeventfdDevice } from './ioeventfd';
import { createIoregionDevice } from './ioregion-device';
import type { VcpuThread } from './vcpu-thread';

export type BusName = 'mmio' | 'pio' | 'fast_mmio';

/** What a feature says about a new device. Kind-specific fields ride along. */
export interface DeviceFields {
  kind: string;
  bus: BusName;
  addr: bigint;
  /** Range length; 0 = exact-address match. Regions are u64-sized, hence bigint. */
  len: number | bigint;
  [field: string]: unknown;
}

/** A registered device (the VM's record of it). */
export interface DeviceInfo extends DeviceFields {
  key: number;
}

/** A device as the VM describes it to one vCPU thread. */
export interface DeviceDesc extends DeviceInfo {
  /** fds dup'ed for the receiving thread, which owns them. */
  fds: number[];
}

export interface WorkerDevice {
  bus: BusName;
  dev: IoDevice;
  /** Release the thread's fds. */
  close(): void;
}

export type WorkerDeviceFactory = (desc: DeviceDesc, vcpu: VcpuThread) => WorkerDevice;

/** One line per device kind. */
const factories: Record<string, WorkerDeviceFactory> = {
  ioregion: createIoregionDevice,
  ioeventfd: ioeventfdDevice,
};

export function createWorkerDevice(desc: DeviceDesc, vcpu: VcpuThread): WorkerDevice {
  const f = factories[desc.kind];
  if (!f) throw new Error(`unknown device kind '${desc.kind}'`);
  return f(desc, vcpu);
}
