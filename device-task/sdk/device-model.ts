// What a device model is: the interface every device under device-task/devices/ implements.

import type { MemorySpec } from '../../proto/device-task-manifest';
import type { EventSignal } from './eventfd';
import type { GuestMemoryDma } from './guest-memory';

/**
 * A device model. It sees guest accesses as (offset into the region, size in bytes, value) plus the
 * region's user_data, which tells regions apart when one device serves several. It must never throw
 * for any offset or size: unknown registers read 0 and ignore writes.
 */
export interface DeviceModel {
  /** A guest load of `size` bytes (1, 2, 4 or 8) at `offset`; the result is truncated to `size`. */
  read(offset: bigint, size: number, userData: bigint): bigint;
  /** A guest store; `value` holds the guest's `size` bytes zero-extended. */
  write(offset: bigint, size: number, value: bigint, userData: bigint): void;
  /** A named eventfd of the manifest became readable; `count` is the counter it held (doorbell writes). */
  onEventfd?(name: string, count: bigint): void;
  /** Back to power-on state. */
  reset(): void;
  /**
   * Optional probe of transaction serialization. When a model defines it, the serve loop calls it for
   * every command that needs a response, before answering it, with whether another command (or any
   * part of one) was already waiting on the same channel: bytes already read past this frame, or a
   * poll(2) with timeout 0 on the command fd reporting POLLIN. KVM serializes non-posted accesses on a
   * read fd, so `true` means a second command was sent before the first was answered (or it follows
   * posted writes, which need no answer). Costs one extra poll per command, paid only by such models.
   */
  observeBacklog?(queued: boolean): void;
}

/** What a model gets from its task: configuration, guest memory for DMA, its eventfds, a logger. */
export interface DeviceContext {
  config: Record<string, unknown>;
  memory: GuestMemoryDma;
  /**
   * The manifest's guest RAM ranges with their memfds, for a model that hands guest RAM on to another
   * process (qemu-remote); absent when the model runs in memory.
   */
  guestMemory?: readonly MemorySpec[];
  eventfds: Map<string, EventSignal>;
  log(message: string): void;
}

/** A registry entry: devices are created by name. */
export interface DeviceDefinition {
  name: string;
  description: string;
  /** Size in bytes of the register window the model decodes (the conformance suite probes past it). */
  regionSize: number;
  /** Eventfds (by manifest name) whose readability wakes the model (doorbells); the others are outputs (irqfds). */
  listen?: string[];
  /** The config keys the model understands, each with what it means (shown by `ioregionfd-emu devices`). */
  config?: Record<string, string>;
  /** The named eventfds the model uses, each with its role. */
  eventfds?: Record<string, string>;
  create(ctx: DeviceContext): DeviceModel;
}
