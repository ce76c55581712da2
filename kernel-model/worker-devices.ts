// Builds a vCPU thread's own instance of a device registered on the VM (ioeventfd, ioregion, ...).
//
// The VM validates and keeps the authoritative device list on the main thread; each vCPU thread gets
// a description with fds dup'ed for it and builds its own IoDevice from it here, so no fd is ever
// shared between threads and closing one never races with another thread using it.

import type { IoDevice } from './io-bus';
import type { VcpuThread } from './vcpu-thread';

export type BusName = 'mmio' | 'pio' | 'fast_mmio';

/** A device as the VM describes it to its vCPUs. Kind-specific fields ride along. */
export interface DeviceDesc {
  key: number;
  kind: string;
  bus: BusName;
  addr: bigint;
  len: number;
  /** fds dup'ed for the receiving thread, which owns them. */
  fds: number[];
  [field: string]: unknown;
}

export interface WorkerDevice {
  bus: BusName;
  dev: IoDevice;
  /** Release the thread's fds. */
  close(): void;
}

export type WorkerDeviceFactory = (desc: DeviceDesc, vcpu: VcpuThread) => WorkerDevice;

/** One line per device kind. */
const factories: Record<string, WorkerDeviceFactory> = {};

export function createWorkerDevice(desc: DeviceDesc, vcpu: VcpuThread): WorkerDevice {
  const f = factories[desc.kind];
  if (!f) throw new Error(`unknown device kind '${desc.kind}'`);
  return f(desc, vcpu);
}
