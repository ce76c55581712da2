// regfile: a small register-file device exercising the SDK: an ID register, scratch registers, a
// write-1-to-clear status register, a counter, an interrupt line (irqfd "irq") and a DMA engine that
// copies guest memory (source, destination, length registers; bad addresses set an error bit).
//
// Map (offsets in bytes, little-endian):
//   0x00 ID       u32 RO   0x10ca1d00
//   0x08 SCRATCH0 u64 RW
//   0x10 SCRATCH1 u64 RW
//   0x18 STATUS   u32 W1C  bit0 DMA done, bit1 DMA error, bit2 IRQ raised
//   0x1c CONTROL  u32 WO   bit0 start DMA, bit1 raise IRQ, bit2 reset device
//   0x20 DMA_SRC  u64 RW
//   0x28 DMA_DST  u64 RW
//   0x30 DMA_LEN  u32 RW   (at most 1 MiB)
//   0x38 READS    u64 RO   number of guest reads so far (reads of READS included)

import type { DeviceDefinition } from '../sdk/device-model';
import { RegisterSpace } from '../sdk/register-space';

export const REGFILE_ID = 0x10ca1d00n;
export const STATUS_DMA_DONE = 1n;
export const STATUS_DMA_ERROR = 2n;
export const STATUS_IRQ = 4n;
export const CONTROL_DMA = 1n;
export const CONTROL_IRQ = 2n;
export const CONTROL_RESET = 4n;
const DMA_MAX = 1 << 20;

export const regfile: DeviceDefinition = {
  name: 'regfile',
  description: 'register file with W1C status, a DMA engine over guest memory and an irqfd interrupt',
  regionSize: 0x40,
  eventfds: { irq: 'the irqfd raised when a DMA completes with interrupts enabled' },
  create(ctx) {
    let reads = 0n;
    const regs: RegisterSpace = new RegisterSpace([
      { name: 'ID', offset: 0x00, size: 4, reset: REGFILE_ID, writable: 0n },
      { name: 'SCRATCH0', offset: 0x08, size: 8 },
      { name: 'SCRATCH1', offset: 0x10, size: 8 },
      { name: 'STATUS', offset: 0x18, size: 4, writable: 0n, w1c: 0x7n },
      { name: 'CONTROL', offset: 0x1c, size: 4, onWrite: (v) => control(v) },
      { name: 'DMA_SRC', offset: 0x20, size: 8 },
      { name: 'DMA_DST', offset: 0x28, size: 8 },
      { name: 'DMA_LEN', offset: 0x30, size: 4 },
      { name: 'READS', offset: 0x38, size: 8, writable: 0n, onRead: () => reads },
    ]);

    function control(v: bigint): void {
      regs.set('CONTROL', 0n);
      if (v & CONTROL_RESET) {
        regs.reset();
        reads = 0n;
        return;
      }
      if (v & CONTROL_DMA) {
        const len = Number(regs.get('DMA_LEN'));
        const data = new Uint8Array(Math.min(len, DMA_MAX));
        const ok = len <= DMA_MAX && ctx.memory.read(regs.get('DMA_SRC'), data) && ctx.memory.write(regs.get('DMA_DST'), data);
        regs.set('STATUS', regs.get('STATUS') | (ok ? STATUS_DMA_DONE : STATUS_DMA_ERROR));
      }
      if (v & CONTROL_IRQ) {
        regs.set('STATUS', regs.get('STATUS') | STATUS_IRQ);
        ctx.eventfds.get('irq')?.signal();
      }
    }

    return {
      read: (offset, size) => {
        reads++;
        return regs.read(offset, size);
      },
      write: (offset, size, value) => regs.write(offset, size, value),
      reset: () => {
        regs.reset();
        reads = 0n;
      },
    };
  },
};
