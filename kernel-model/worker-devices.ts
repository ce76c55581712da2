// How a vCPU thread builds its own instance of a bus device (ioeventfd, ioregion) from the VM's
// description of it (device-desc.ts).
//
// The VM validates and keeps the authoritative device list on the main thread; each vCPU thread gets
// a description with fds dup'ed for it and builds its own IoDevice from it here, so no fd is ever
// shared between threads and closing one never races with another thread using it.

import type { DeviceDesc, WorkerDevice } from './device-desc';
import { ioeventfdDevice } from './ioeventfd-device';
import { createIoregionDevice } from './ioregion-device';
import type { VcpuPort } from './vcpu-port';

export function createWorkerDevice(desc: DeviceDesc, port: VcpuPort): WorkerDevice {
  return desc.kind === 'ioregion' ? createIoregionDevice(desc, port) : ioeventfdDevice(desc);
}
