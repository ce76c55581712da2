// Spawning device tasks from a selftest: the VMM library's spawnDeviceTask (vmm/device-task.ts), with
// a registration failure reported as the test's assertion failure.

import { KvmError } from '../../../proto/errors';
import { DeviceTask, DeviceTaskSpec, spawnDeviceTask } from '../../../vmm';
import { TEST_FAIL } from './test_util';

export type { DeviceChannel, DeviceTask, DeviceTaskSpec, ExitStatus, RegionSpec } from '../../../vmm';

/** Spawn a device task with its transports; register `regions` if a VM is given (asserting). */
export function spawn_device_task(spec: DeviceTaskSpec): DeviceTask {
  try {
    return spawnDeviceTask(spec);
  } catch (e) {
    if (e instanceof KvmError) return TEST_FAIL(`spawn_device_task: ${e.message}`, e.errno);
    throw e;
  }
}
