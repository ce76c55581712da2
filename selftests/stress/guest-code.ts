// Guest code of the data-path campaigns. The kernel-model's vCPU threads load this module for every
// vCPU, so it imports nothing but the CPU: a campaign module would bring the VMM library along, and
// with it module-level state (process listeners) that each vCPU's fresh load would add again.

import { cpu } from '../../proto/guest-cpu';

/** device_kill_guest flags: bit 0 port I/O; bits 8 and up: a read after every N-th write. */
export const FLAG_PIO = 1n;

/** The value of the i-th write (1-based): unique per write, so a torn or misplaced one shows. */
export function writeValue(tag: bigint, i: number, pio: boolean): bigint {
  return pio ? ((tag & 0xffffn) << 16n) | BigInt(i) : (tag << 32n) | BigInt(i);
}

/** n writes of sequence numbers to the region at base, a read after every readEvery-th (0: none). */
export function device_kill_guest(base: bigint, n: bigint, flags: bigint, tag: bigint): void {
  const c = cpu();
  const pio = (flags & FLAG_PIO) !== 0n;
  const readEvery = Number(flags >> 8n);
  for (let i = 1; i <= Number(n); i++) {
    const v = writeValue(tag, i, pio);
    if (pio) c.outPort(Number(base), 4, Number(v));
    else c.write(base, 8, v);
    if (readEvery && i % readEvery === 0) {
      if (pio) c.inPort(Number(base) + 4, 4);
      else c.read(base + 8n, 8);
    }
  }
}
