// The vCPU thread's half of KVM_IOEVENTFD (virt/kvm/eventfd.c's ioeventfd_write): the bus device
// that matches a guest write and bumps the eventfd. The VM half (registration) is ioeventfd.ts.

import { EOPNOTSUPP } from '../proto/errno';
import { closeQuietly, writeRaw } from '../proto/os';
import type { IoDevice } from './io-bus';
import type { DeviceDesc, IoeventfdFields, WorkerDevice } from './device-desc';

const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

/**
 * ioeventfd_write: only a write at exactly the registered address; len 0 takes any size, otherwise
 * the size must match and, with DATAMATCH, the value (as a u8/u16/u32/u64) must equal datamatch.
 * A hit adds 1 to the eventfd (eventfd_signal never blocks, so neither does this write). There is
 * no read handler: reads always go on down the bus.
 */
export function ioeventfdDevice(desc: DeviceDesc & IoeventfdFields): WorkerDevice {
  const addr = desc.addr;
  const len = Number(desc.len);
  const { wildcard, datamatch } = desc;
  const mask = len ? (1n << BigInt(8 * len)) - 1n : 0n;
  const fd = desc.fds[0];
  const dev: IoDevice = {
    write(a, size, value) {
      if (a !== addr) return EOPNOTSUPP;
      if (len) {
        if (size !== len) return EOPNOTSUPP;
        if (!wildcard && (value & mask) !== datamatch) return EOPNOTSUPP;
      }
      writeRaw(fd, ONE, 8);
      return 0;
    },
    read() {
      return EOPNOTSUPP;
    },
  };
  return { bus: desc.bus, dev, close: () => closeQuietly(fd) };
}
