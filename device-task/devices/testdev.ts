// testdev: the kvm-unit-tests ioregionfd helper. One 64-bit value: a write stores the access's bytes
// into its low bytes, a read of n bytes returns its low n bytes; offsets are ignored, so every port or
// address of the region echoes the same value.

import { sizeMask as mask } from '../../proto/ioregionfd-wire';
import type { DeviceDefinition } from '../sdk/device-model';

export const testdev: DeviceDefinition = {
  name: 'testdev',
  description: 'kvm-unit-tests echo device: one 64-bit value, written and read back at any offset',
  regionSize: 8,
  create() {
    let value = 0n;
    return {
      read: (_offset, size) => value & mask(size),
      write: (_offset, size, v) => {
        value = (value & ~mask(size)) | (v & mask(size));
      },
      reset: () => {
        value = 0n;
      },
    };
  },
};
