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

/** kick_storm_guest's operations, 16 bytes each in guest RAM: kind (KS_*) and the value written. */
export const KS_POSTED = 0n;
export const KS_SYNC = 1n;
export const KS_READ = 2n;
/** Not an access: hlt, which (without an irqchip) exits to the VMM: the VMM paces the guest with these. */
export const KS_HALT = 3n;
/** Where the synchronous region sits above the posted one; each vCPU uses offset 8 * id in both. */
export const KS_SYNC_OFFSET = 0x1000n;
/** Per vCPU, 32 bytes of state in guest RAM: progress (ops done), read mismatches, the first one's expected and read value. */
export const KS_STATE_BYTES = 32;

/**
 * Run `n` operations from guest RAM at ops (this vCPU's list: ops + id * stride): posted writes to
 * base, synchronous writes and reads at base + KS_SYNC_OFFSET, all at offset 8 * id. A read must
 * return this vCPU's last write (the device answers with the last value written at that offset). A
 * KS_HALT op is hlt, an exit to the VMM, which resumes the vCPU and kicks it.
 * The lists and the state are read and written through a view of RAM, not as guest accesses, so
 * they do not end a run of posted writes.
 */
export function kick_storm_guest(base: bigint, ops: bigint, stride: bigint, n: bigint, state: bigint): void {
  const c = cpu();
  const id = BigInt(c.vcpuId);
  const bytes = c.ram(ops + id * stride, Number(n) * 16);
  const list = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const stateBytes = c.ram(state + id * BigInt(KS_STATE_BYTES), KS_STATE_BYTES);
  const s = new DataView(stateBytes.buffer, stateBytes.byteOffset, KS_STATE_BYTES);
  const posted = base + 8n * id;
  const sync = base + KS_SYNC_OFFSET + 8n * id;
  let last = 0n;
  for (let i = 0; i < Number(n); i++) {
    const kind = list.getBigUint64(16 * i, true);
    const value = list.getBigUint64(16 * i + 8, true);
    if (kind === KS_HALT) {
      c.hlt();
    } else if (kind === KS_READ) {
      const got = c.read(sync, 8);
      if (got !== last) {
        if (s.getUint32(8, true) === 0) {
          s.setBigUint64(16, last, true);
          s.setBigUint64(24, got, true);
        }
        s.setUint32(8, s.getUint32(8, true) + 1, true);
      }
    } else {
      c.write(kind === KS_POSTED ? posted : sync, 8, value);
      last = value;
    }
    s.setUint32(0, i + 1, true);
  }
}
