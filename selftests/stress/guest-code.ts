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

/** bad_replies_guest flags: bit 0 port I/O, bit 1 write (else read), bit 2 a posted write first; bits 8-11 the size. */
export const BR_PIO = 1n;
export const BR_WRITE = 2n;
export const BR_POSTED_FIRST = 4n;
/** Where bad_replies_guest stores what its reads returned (8 bytes each); guest RAM. */
export const BR_RESULTS = 0x1000n;
/** The posted region of BR_POSTED_FIRST, this far above the region under test. */
export const BR_POSTED_OFFSET = 0x100n;

/** `count` accesses to base (reads store their value at BR_RESULTS), after one posted write if asked. */
export function bad_replies_guest(base: bigint, flags: bigint, value: bigint, count: bigint): void {
  const c = cpu();
  const pio = (flags & BR_PIO) !== 0n;
  const size = Number((flags >> 8n) & 0xfn) as 1 | 2 | 4 | 8;
  const port = Number(value & 0xffff_ffffn);
  if (flags & BR_POSTED_FIRST) {
    if (pio) c.outPort(Number(base + BR_POSTED_OFFSET), size as 1 | 2 | 4, port);
    else c.write(base + BR_POSTED_OFFSET, size, value);
  }
  for (let i = 0n; i < count; i++) {
    if (flags & BR_WRITE) {
      if (pio) c.outPort(Number(base), size as 1 | 2 | 4, port);
      else c.write(base, size, value);
    } else {
      const v = pio ? BigInt(c.inPort(Number(base), size as 1 | 2 | 4)) : c.read(base, size);
      c.write(BR_RESULTS + 8n * i, 8, v);
    }
  }
}
