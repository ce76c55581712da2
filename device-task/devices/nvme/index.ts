// nvme: an NVMe 1.4 controller (PCIe register interface, NVM command set) over raw disk images.
//
// BAR0 is served over ioregionfd: the VMM registers the register page [BAR0, +0x1000) as a
// synchronous region with user_data 0, and the doorbells [BAR0 + 0x1000, ...) as a posted-writes
// region with user_data 0x1000 (user_data is the region's offset inside BAR0, so one channel can
// carry both). Alternatively the I/O queues' doorbells are KVM_IOEVENTFDs on the eventfd named
// "doorbell" and the values come from the host's shadow doorbell page (Doorbell Buffer Config).
// Interrupt vector n is the eventfd "irq<n>" (an irqfd). Config: see config.ts.

import type { DeviceDefinition } from '../../sdk/device-model';
import { BackingStore, FileStore, MemoryStore } from './backing-store';
import { parseConfig } from './config';
import { BAR0_SIZE, NvmeController } from './controller';
import { makeNamespace } from './identify';

export { BAR0_SIZE, NvmeController };

export const nvme: DeviceDefinition = {
  name: 'nvme',
  description: 'NVMe 1.4 controller over raw disk images: registers, doorbells (posted ioregionfd or ioeventfd + shadow doorbells), irqfd interrupts',
  regionSize: BAR0_SIZE,
  listen: ['doorbell'],
  create(ctx) {
    const config = parseConfig(ctx.config);
    const stores: BackingStore[] = [];
    try {
      const namespaces = config.namespaces.map((n, i) => {
        let store: BackingStore;
        if (n.image === undefined) store = new MemoryStore(n.ramSize);
        else {
          try {
            store = FileStore.open(n.image, n.createSize);
          } catch (e) {
            throw new Error(`image ${n.image}: ${(e as Error).message}`);
          }
        }
        stores.push(store);
        const ns = makeNamespace(i + 1, store, n.lbaSize);
        if (ns.blocks === 0) throw new Error(`image ${store.description} holds no whole ${n.lbaSize}-byte block`);
        return ns;
      });
      return new NvmeController(ctx, config, namespaces);
    } catch (e) {
      stores.forEach((s) => s.close());
      throw e;
    }
  },
};
