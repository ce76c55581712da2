// rendezvous: proves that two regions on different fds are served concurrently. Run two rendezvous
// tasks, each serving its own region over its own channel, with crossed eventfds (task A's 'out' is
// task B's 'in' and vice versa). A guest READ signals 'out', then waits up to config.timeout_ms
// (default 5000) for 'in' and answers 1 if the partner arrived, 0 on timeout. Two vCPUs reading the
// two regions at once both get 1 only if KVM let both transactions be in flight together; if KVM
// serialized them, the first one waits out its timeout and reads 0.
//
// Writes are ignored. Only READs meet. A partner signal that arrived after a timeout stays in the
// eventfd and satisfies the next read at once: a test should use each pair once, or reset the pair
// by draining. Without a waitable 'in' eventfd (none in the manifest) a read answers 0 at once.
// 'in' is deliberately not in `listen`: the model waits on it itself, inside the read.

import type { DeviceDefinition } from '../sdk/device-model';
import { isEventWaiter } from '../sdk/eventfd';

export const RENDEZVOUS_DEFAULT_TIMEOUT_MS = 5000;

export const rendezvous: DeviceDefinition = {
  name: 'rendezvous',
  description: "a READ signals eventfd 'out' and waits for 'in': 1 if the partner came within timeout_ms, else 0",
  regionSize: 8,
  config: { timeout_ms: 'how long a READ waits for the partner (default 5000)' },
  eventfds: { out: 'signalled at each READ', in: "the partner's 'out'" },
  create(ctx) {
    const raw = ctx.config.timeout_ms ?? RENDEZVOUS_DEFAULT_TIMEOUT_MS;
    const timeoutMs = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw;
    if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > 0x7fffffff) {
      throw new Error(`config.timeout_ms must be a whole number of milliseconds, got ${JSON.stringify(raw)}`);
    }
    return {
      read: () => {
        ctx.eventfds.get('out')?.signal();
        const partner = ctx.eventfds.get('in');
        if (!isEventWaiter(partner)) return 0n;
        return partner.waitFor(timeoutMs) === undefined ? 0n : 1n;
      },
      write: () => undefined,
      reset: () => undefined,
    };
  },
};
