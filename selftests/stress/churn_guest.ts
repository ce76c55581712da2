// Guest code of the stress campaigns: a little work on each kind of thing a VM has (RAM, an ioregion
// served by a device task, an ioeventfd doorbell), then return (KVM_EXIT_SHUTDOWN). It runs in the
// kernel-model's vCPU threads, which load this module by path, so it has no top-level effects.

import { cpu } from '../../proto/guest-cpu';

/**
 * rdi: a RAM GPA (each vCPU uses its own 8 bytes there); rsi: an ioregion GPA to check (0: none);
 * rdx: an ioeventfd doorbell GPA (0: none); rcx: the value to write and read back; r8: loop count
 * (0: forever, for a guest that must be busy when its VMM is killed).
 * A wrong value read back throws, which the VMM sees as KVM_EXIT_INTERNAL_ERROR.
 */
export function churn_guest(ram: bigint, dev: bigint, doorbell: bigint, value: bigint, loops: bigint): void {
  const c = cpu();
  const mine = ram + 8n * BigInt(c.vcpuId);
  for (let i = 0n; loops === 0n || i < loops; i++) {
    c.write(mine, 8, value + i);
    const back = c.read(mine, 8);
    if (back !== value + i) throw new Error(`RAM at 0x${mine.toString(16)} read 0x${back.toString(16)}, wrote 0x${(value + i).toString(16)}`);
    if (dev) {
      c.write(dev, 8, value + i);
      const echoed = c.read(dev, 8);
      if (echoed !== value + i) throw new Error(`device at 0x${dev.toString(16)} echoed 0x${echoed.toString(16)}, wrote 0x${(value + i).toString(16)}`);
    }
    if (doorbell) c.write(doorbell, 4, 1n);
  }
}
