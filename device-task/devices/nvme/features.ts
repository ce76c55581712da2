// Get / Set Features: the values the controller keeps, their defaults, and the checks each Set makes.
// Saving is not supported (SV = 1 is Feature Identifier Not Saveable), so the saved value of a feature
// is its default, as the specification says for features that cannot be saved.

import { DNR, FID, SC } from './defs';
import { WARNING_TEMPERATURE } from './identify';

export interface FeatureLimits {
  /** Interrupt vectors the controller has. */
  vectors: number;
  /** I/O queue pairs it can offer. */
  maxQueues: number;
  volatileWriteCache: boolean;
}

export interface FeatureResult {
  status: number;
  dw0: number;
}

const ok = (dw0 = 0): FeatureResult => ({ status: SC.SUCCESS, dw0: dw0 >>> 0 });
const invalid: FeatureResult = { status: SC.INVALID_FIELD | DNR, dw0: 0 };

/** Select field of Get Features. */
export const SEL_CURRENT = 0;
export const SEL_DEFAULT = 1;
export const SEL_SAVED = 2;
export const SEL_SUPPORTED = 3;

/** Supported-capabilities bits of SEL 3: changeable (every feature here), never saveable or per namespace. */
const CAP_CHANGEABLE = 1 << 2;

export class Features {
  /** Arbitration: AB 2:0, LPW 15:8, MPW 23:16, HPW 31:24 (AB 0: one command per turn). */
  arbitration = 0;
  powerManagement = 0;
  overTemperature = WARNING_TEMPERATURE;
  underTemperature = 0;
  errorRecovery = 0;
  writeCacheEnabled: boolean;
  /** Number of Queues granted, both 0's based. */
  sqAllocated: number;
  cqAllocated: number;
  /** Interrupt Coalescing: THR 7:0 (0's based entries), TIME 15:8 (100 µs units). */
  coalescing = 0;
  /** Vectors with Coalescing Disable set (Interrupt Vector Configuration). */
  readonly coalescingDisabled = new Set<number>();
  writeAtomicity = 0;
  asyncEventConfig = 0;

  constructor(private readonly limits: FeatureLimits) {
    this.writeCacheEnabled = limits.volatileWriteCache;
    this.sqAllocated = limits.maxQueues - 1;
    this.cqAllocated = limits.maxQueues - 1;
  }

  /** Back to the defaults (a controller reset; nothing is saved). */
  reset(): void {
    this.arbitration = 0;
    this.powerManagement = 0;
    this.overTemperature = WARNING_TEMPERATURE;
    this.underTemperature = 0;
    this.errorRecovery = 0;
    this.writeCacheEnabled = this.limits.volatileWriteCache;
    this.sqAllocated = this.limits.maxQueues - 1;
    this.cqAllocated = this.limits.maxQueues - 1;
    this.coalescing = 0;
    this.coalescingDisabled.clear();
    this.writeAtomicity = 0;
    this.asyncEventConfig = 0;
  }

  /** Whether a feature identifier exists here (Volatile Write Cache only with a cache). */
  private known(fid: number): boolean {
    if (fid === FID.VOLATILE_WRITE_CACHE) return this.limits.volatileWriteCache;
    return (Object.values(FID) as number[]).includes(fid);
  }

  /** Get Features: CDW10 SEL and FID, CDW11 the feature-specific argument (a vector, a sensor). */
  get(fid: number, sel: number, cdw11: number): FeatureResult {
    if (!this.known(fid) || sel > SEL_SUPPORTED) return invalid;
    if (sel === SEL_SUPPORTED) return ok(CAP_CHANGEABLE);
    const source = sel === SEL_CURRENT ? this : new Features(this.limits);
    switch (fid) {
      case FID.ARBITRATION: return ok(source.arbitration);
      case FID.POWER_MANAGEMENT: return ok(source.powerManagement);
      case FID.TEMPERATURE_THRESHOLD: {
        const tmpsel = (cdw11 >> 16) & 0xf;
        const thsel = (cdw11 >> 20) & 0x3;
        if (tmpsel !== 0 || thsel > 1) return invalid;
        return ok((thsel ? source.underTemperature : source.overTemperature) | (thsel << 20));
      }
      case FID.ERROR_RECOVERY: return ok(source.errorRecovery);
      case FID.VOLATILE_WRITE_CACHE: return ok(source.writeCacheEnabled ? 1 : 0);
      case FID.NUMBER_OF_QUEUES: return ok(source.sqAllocated | (source.cqAllocated << 16));
      case FID.INTERRUPT_COALESCING: return ok(source.coalescing);
      case FID.INTERRUPT_VECTOR_CONFIG: {
        const iv = cdw11 & 0xffff;
        if (iv >= this.limits.vectors) return invalid;
        return ok(iv | (source.coalescingDisabled.has(iv) ? 1 << 16 : 0));
      }
      case FID.WRITE_ATOMICITY: return ok(source.writeAtomicity);
      case FID.ASYNC_EVENT_CONFIG: return ok(source.asyncEventConfig);
      default: return invalid;
    }
  }

  /**
   * Set Features. `ioQueuesExist`: Number of Queues may only be set before any I/O queue is created
   * (Command Sequence Error after).
   */
  set(fid: number, save: boolean, cdw11: number, ioQueuesExist: boolean): FeatureResult {
    if (!this.known(fid)) return invalid;
    if (save) return { status: SC.FEATURE_NOT_SAVEABLE | DNR, dw0: 0 };
    switch (fid) {
      case FID.ARBITRATION:
        this.arbitration = cdw11 >>> 0;
        return ok();
      case FID.POWER_MANAGEMENT:
        // One power state (NPSS 0): PS must be 0; the workload hint is kept.
        if ((cdw11 & 0x1f) !== 0) return invalid;
        this.powerManagement = cdw11 & 0xff;
        return ok();
      case FID.TEMPERATURE_THRESHOLD: {
        const tmpsel = (cdw11 >> 16) & 0xf;
        const thsel = (cdw11 >> 20) & 0x3;
        if ((tmpsel !== 0 && tmpsel !== 0xf) || thsel > 1) return invalid;
        if (thsel) this.underTemperature = cdw11 & 0xffff;
        else this.overTemperature = cdw11 & 0xffff;
        return ok();
      }
      case FID.ERROR_RECOVERY:
        // TLER only: deallocated-or-unwritten-block errors (DULBE) are not supported.
        if (cdw11 & (1 << 16)) return invalid;
        this.errorRecovery = cdw11 & 0xffff;
        return ok();
      case FID.VOLATILE_WRITE_CACHE:
        this.writeCacheEnabled = (cdw11 & 1) !== 0;
        return ok();
      case FID.NUMBER_OF_QUEUES: {
        if (ioQueuesExist) return { status: SC.COMMAND_SEQUENCE_ERROR | DNR, dw0: 0 };
        const nsqr = cdw11 & 0xffff;
        const ncqr = cdw11 >>> 16;
        if (nsqr === 0xffff || ncqr === 0xffff) return invalid;
        this.sqAllocated = Math.min(nsqr, this.limits.maxQueues - 1);
        this.cqAllocated = Math.min(ncqr, this.limits.maxQueues - 1);
        return ok(this.sqAllocated | (this.cqAllocated << 16));
      }
      case FID.INTERRUPT_COALESCING:
        this.coalescing = cdw11 & 0xffff;
        return ok();
      case FID.INTERRUPT_VECTOR_CONFIG: {
        const iv = cdw11 & 0xffff;
        if (iv >= this.limits.vectors) return invalid;
        if (cdw11 & (1 << 16)) this.coalescingDisabled.add(iv);
        else this.coalescingDisabled.delete(iv);
        return ok();
      }
      case FID.WRITE_ATOMICITY:
        this.writeAtomicity = cdw11 & 1;
        return ok();
      case FID.ASYNC_EVENT_CONFIG:
        // SMART / health critical warnings (7:0) only: no notices are supported (OAES 0).
        this.asyncEventConfig = cdw11 & 0xff;
        return ok();
      default:
        return invalid;
    }
  }
}
