// The types of a bus device's description, shared by the VM (main thread), the vCPU contract and the
// device kinds. Types only: importing this file loads no code, so the device kinds can name their
// description without importing the factory that builds them (worker-devices.ts).

import type { BusName, IoDevice } from './io-bus';
import type { IoregionFields } from './ioregionfd-shared';

/** Where a device sits: a bus, an address and a length (0 = exact-address match; u64, hence bigint). */
interface Placement {
  bus: BusName;
  addr: bigint;
  len: bigint;
}

/** Kind-specific fields of an 'ioeventfd' device description (fds[0] = the eventfd). */
export interface IoeventfdFields {
  kind: 'ioeventfd';
  /** Registered without DATAMATCH. */
  wildcard: boolean;
  datamatch: bigint;
}

/** What a feature says about a new device: its placement and its kind's own fields (by `kind`). */
export type DeviceFields = Placement & (IoregionFields | IoeventfdFields);

/** A registered device (the VM's record of it). */
export type DeviceInfo = DeviceFields & { key: number };

/** A device as the VM describes it to one vCPU thread, with fds dup'ed for (and owned by) that thread. */
export type DeviceDesc = DeviceInfo & { fds: number[] };

/** A vCPU thread's instance of a device. */
export interface WorkerDevice {
  bus: BusName;
  dev: IoDevice;
  /** Release the thread's fds. */
  close(): void;
}
