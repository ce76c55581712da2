// The DeviceModel that stands for a remote QEMU device: each ioregionfd access becomes one BAR_READ
// or BAR_WRITE at the BAR's base + offset, the region told apart by its user_data (= the BAR number).
// Accesses the remote must never see (an unknown BAR, past the BAR's end) are declined here: they
// read 0 and are counted, because the remote treats an address it does not decode as fatal.

import { sizeMask } from '../../../proto/ioregionfd-wire';
import type { DeviceModel } from '../../sdk/device-model';
import { RemoteFailure, RemoteLink } from './link';
import type { MappedBar } from './pci';

/** How many declined accesses are logged one by one; the rest are only counted. */
const LOGGED_DECLINES = 5;

export interface BridgeOptions {
  log(message: string): void;
  /**
   * The remote failed (gone, or broke the protocol). The device task's handler stops the remote and
   * ends the task, so the guest's access takes KVM's failure path; it does not return. A test's
   * handler may throw instead.
   */
  onFailure(e: RemoteFailure): never;
  /** Stop the remote (what close() does); the device task's exit does it anyway. */
  close?(): void;
}

export class QemuBridge implements DeviceModel {
  /** Accesses answered here without reaching the remote (unknown BAR, out of range). */
  declined = 0;
  private readonly byNumber: (MappedBar | undefined)[] = [];

  constructor(private readonly link: RemoteLink, readonly bars: readonly MappedBar[], private readonly opts: BridgeOptions) {
    for (const b of bars) this.byNumber[b.index] = b;
  }

  /** The BAR an access goes to, or undefined when it must not reach the remote. */
  private target(offset: bigint, size: number, userData: bigint, write: boolean): MappedBar | undefined {
    const bar = userData < BigInt(this.byNumber.length) ? this.byNumber[Number(userData)] : undefined;
    if (bar && offset + BigInt(size) <= bar.size) return bar;
    if (this.declined++ < LOGGED_DECLINES) {
      this.opts.log(`declined a ${size}-byte ${write ? 'write' : 'read'} at offset 0x${offset.toString(16)} with user_data 0x${userData.toString(16)}: ` +
        `${bar ? `past the end of BAR${bar.index} (0x${bar.size.toString(16)} bytes)` : 'no BAR is mapped with that number'}` +
        `${this.declined === LOGGED_DECLINES ? ' (further declines are only counted)' : ''}`);
    }
    return undefined;
  }

  read(offset: bigint, size: number, userData: bigint): bigint {
    const bar = this.target(offset, size, userData, false);
    if (!bar) return 0n;
    try {
      return this.link.barRead(bar.base + offset, size, !bar.pio) & sizeMask(size);
    } catch (e) {
      if (e instanceof RemoteFailure) this.opts.onFailure(e);
      throw e;
    }
  }

  write(offset: bigint, size: number, value: bigint, userData: bigint): void {
    const bar = this.target(offset, size, userData, true);
    if (!bar) return;
    try {
      this.link.barWrite(bar.base + offset, size, !bar.pio, value);
    } catch (e) {
      if (e instanceof RemoteFailure) this.opts.onFailure(e);
      throw e;
    }
  }

  /** Stop the remote behind this model. Not part of DeviceModel: for whoever created the model in memory. */
  close(): void {
    this.opts.close?.();
  }

  reset(): void {
    try {
      this.link.deviceReset();
    } catch (e) {
      if (e instanceof RemoteFailure) this.opts.onFailure(e);
      throw e;
    }
  }
}
