// doorbell: a device driven by an ioeventfd instead of ioregionfd. When the guest rings (eventfd
// "doorbell"), it reads a u64 request at config.mailbox, writes request + 1 at mailbox + 8, counts the
// rings at mailbox + 16 and raises its interrupt (irqfd "irq"): the full doorbell -> DMA -> interrupt
// loop with no VMM in between.

import type { DeviceDefinition } from '../sdk/device-model';

export const doorbell: DeviceDefinition = {
  name: 'doorbell',
  description: 'ioeventfd doorbell: DMA request+1 into a guest mailbox, then raise the irqfd',
  regionSize: 0,
  create(ctx) {
    const raw = ctx.config.mailbox ?? '0x0';
    let mailbox: bigint;
    try {
      mailbox = BigInt(typeof raw === 'number' || typeof raw === 'string' ? raw : Number.NaN);
    } catch {
      throw new Error(`config.mailbox must be a guest physical address ("0x1000" or a number), got ${JSON.stringify(raw)}`);
    }
    let rings = 0n;
    return {
      read: () => 0n,
      write: () => undefined,
      onEventfd(name, count) {
        if (name !== 'doorbell') return;
        rings += count;
        const request = ctx.memory.readU64(mailbox);
        if (request === undefined || !ctx.memory.writeU64(mailbox + 8n, request + 1n) || !ctx.memory.writeU64(mailbox + 16n, rings)) {
          ctx.log(`mailbox 0x${mailbox.toString(16)} is outside guest memory; ring ignored`);
          return;
        }
        ctx.eventfds.get('irq')?.signal();
      },
      reset: () => {
        rings = 0n;
      },
    };
  },
  listen: ['doorbell'],
  config: { mailbox: 'guest physical address of the request (u64); the answer goes to mailbox + 8 (default 0x0)' },
  eventfds: { doorbell: 'the ioeventfd the guest rings', irq: 'the irqfd raised after each answer' },
};
