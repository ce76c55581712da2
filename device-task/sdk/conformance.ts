// The conformance suite every device model runs, in memory: no process, no fd. It drives a model the
// way a hostile or buggy guest could (every offset and size around the register window, huge offsets,
// random sequences, any eventfd name) and lists what the model did wrong.
//
// What it checks (each item is a violation message when it fails):
//   * create() succeeds with the given config;
//   * read/write at every offset in [0, regionSize + 64) for sizes 1, 2, 4, 8 never throw, and every
//     read returns a bigint in [0, 2^(8*size)) (the same for the "large offsets": the edges of the
//     u32 and u64 ranges and random u64s);
//   * onEventfd(name, count) never throws, for the model's `listen` names and any other name/count;
//   * reset restores the power-on state. Reads may have side effects (a READS counter, a FIFO pop),
//     so a single sweep cannot be compared with a remembered "reset value". Instead every compared
//     sweep starts from the same state and performs the same accesses: the suite compares the sweep
//     of a fresh model (power-on), the sweep of a model right after reset(), and the sweep of a model
//     after random writes, eventfds and reset(). Any deterministic side effect then repeats exactly;
//     any state reset() forgot shows up as a difference. Guest RAM is not device state: it is put
//     back as it was before each compared sweep. Registers that legitimately change on their own
//     (a clock) are declared in `volatile` and left out of comparisons;
//   * a seeded random sequence (20k accesses, resets, eventfds, backlog observations by default) never
//     throws, reads stay in range, and two runs of it on two fresh models give the same reads
//     (the model depends only on what it was told; opt out with `deterministic: false`);
//   * a bare context (no eventfds at all, no guest memory) is survived too: a manifest may omit both.
//
// The fake context: guest RAM is a plain 1 MiB Uint8Array at GPA 0 behind GuestMemoryDma; every
// eventfd name the model asks for exists and records its signals (RecordingSignal); waiting on one
// (EventWaiter) returns "nobody came" at once, so a model with a timeout never sleeps here.

import type { DeviceContext, DeviceDefinition, DeviceModel } from './device-model';
import type { EventSignal, EventWaiter } from './eventfd';
import { GuestMemoryDma } from './guest-memory';
import { sizeMask } from '../../proto/ioregionfd-wire';

/** Sizes of the accesses KVM hands to a device (docs/ioregionfd.md §4.5). */
export const ACCESS_SIZES = [1, 2, 4, 8] as const;
/** How far past regionSize the offset sweep goes. */
export const SWEEP_SLACK = 64;
/** Guest RAM of the fake context. */
export const FAKE_RAM_SIZE = 1 << 20;

const U64_MAX = 0xffff_ffff_ffff_ffffn;
const hex = (v: bigint | number) => `0x${v.toString(16)}`;

/** An eventfd stand-in that records every signal; waiting on it times out at once. */
export class RecordingSignal implements EventSignal, EventWaiter {
  /** Every signal(count), in order. */
  readonly counts: bigint[] = [];
  constructor(readonly name: string) {}

  signal(count = 1n): void {
    this.counts.push(count);
  }

  /** Sum of all signalled counts (what an eventfd counter would hold). */
  get total(): bigint {
    return this.counts.reduce((a, b) => a + b, 0n);
  }

  /** Nobody else lives in memory: always "timed out", without sleeping. */
  waitFor(_timeoutMs: number): bigint | undefined {
    return undefined;
  }
}

/** A name → eventfd map in which every name exists, created (as a recorder) on first use. */
class AnyNameEventfds extends Map<string, EventSignal> {
  override get(name: string): EventSignal {
    let s = super.get(name);
    if (!s) {
      s = new RecordingSignal(name);
      super.set(name, s);
    }
    return s;
  }

  override has(_name: string): boolean {
    return true;
  }
}

export interface FakeContextOptions {
  config?: Record<string, unknown>;
  /** Bytes of guest RAM at GPA 0 (default 1 MiB); 0 = no guest memory at all. */
  ramSize?: number;
  /** Which eventfds exist: names (each a RecordingSignal), or 'any' (every name, the default). */
  eventfds?: string[] | 'any';
}

/** A DeviceContext for unit tests, with handles on everything the model can touch. */
export interface FakeDeviceContext {
  ctx: DeviceContext;
  /** The guest RAM behind ctx.memory (GPA 0). */
  ram: Uint8Array;
  /** The recorder behind eventfd `name`; undefined if the context has no such eventfd. */
  signal(name: string): RecordingSignal | undefined;
  /** Every ctx.log() line. */
  logs: string[];
}

/** Build a fake DeviceContext: plain-memory guest RAM at GPA 0, recording eventfds, config as given. */
export function fakeDeviceContext(opts: FakeContextOptions = {}): FakeDeviceContext {
  const ram = new Uint8Array(opts.ramSize ?? FAKE_RAM_SIZE);
  const names = opts.eventfds ?? 'any';
  const eventfds = names === 'any' ? new AnyNameEventfds() : new Map<string, EventSignal>(names.map((n) => [n, new RecordingSignal(n)]));
  const logs: string[] = [];
  const ctx: DeviceContext = {
    config: opts.config ?? {},
    memory: new GuestMemoryDma(ram.length ? [{ gpa: 0n, bytes: ram }] : []),
    eventfds,
    log: (m) => {
      logs.push(m);
    },
  };
  return {
    ctx, ram, logs,
    signal: (name) => (names === 'any' || names.includes(name) ? (eventfds.get(name) as RecordingSignal) : undefined),
  };
}

export interface ConformanceOptions {
  /** The model's config (ctx.config). */
  config?: Record<string, unknown>;
  /** Seed of every pseudo-random choice (default 1): a failure replays exactly. */
  seed?: number;
  /** Length of the random access sequence (default 20000). */
  randomAccesses?: number;
  /**
   * Byte ranges whose reads may legitimately differ between identical runs (clocks): left out of the
   * reset comparisons; declaring any also skips the replay comparison of the random sequence.
   */
  volatile?: { offset: number; size: number }[];
  /** Set false for a model whose reads depend on something besides its accesses (time): skips the replay comparison. */
  deterministic?: boolean;
  /** Stop listing after this many violations (default 50); one more line says how many were left out. */
  maxViolations?: number;
}

/** xorshift32, so every choice the suite makes replays from the seed (also used by device-task tests). */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }

  u32(): number {
    let s = this.s;
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    this.s = s >>> 0;
    return this.s;
  }

  below(n: number): number {
    return this.u32() % n;
  }

  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  size(): number {
    return ACCESS_SIZES[this.below(4)];
  }
}

/** Offsets no device decodes, where sloppy arithmetic (Number(), shifts, array indexing) breaks. */
const EDGE_OFFSETS: bigint[] = [
  0x7fff_ffffn, 0x8000_0000n, 0xffff_fff8n, 0xffff_ffffn, 0x1_0000_0000n, 0x1f_ffff_ffff_ffffn, 0x20_0000_0000_0000n,
  0x7fff_ffff_ffff_ffffn, 0x8000_0000_0000_0000n, U64_MAX - 8n, U64_MAX - 7n, U64_MAX - 1n, U64_MAX,
];
const EVENTFD_NAMES = ['irq', 'doorbell', 'in', 'out', '', 'no-such-eventfd', '__proto__', 'constructor', 'x'.repeat(300), '\u0000'];
const EVENTFD_COUNTS = [0n, 1n, 2n, 7n, 0xffff_ffffn, 0xffff_ffff_ffff_fffen, U64_MAX];

/** Collects violations, capped. */
class Report {
  readonly lines: string[] = [];
  private dropped = 0;
  constructor(private readonly max: number) {}

  add(line: string): void {
    if (this.lines.length < this.max) this.lines.push(line);
    else this.dropped++;
  }

  get failed(): boolean {
    return this.lines.length > 0;
  }

  result(): string[] {
    return this.dropped ? [...this.lines, `... and ${this.dropped} more violations`] : this.lines;
  }
}

const describe = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

/** Sentinel of a read that threw or returned garbage: never equal to a valid result. */
const BAD_READ = -1n;

/** Drives one model instance and reports what it does wrong. */
class Prober {
  constructor(readonly model: DeviceModel, readonly report: Report, readonly where: string) {}

  read(offset: bigint, size: number, userData: bigint): bigint {
    let v: unknown;
    try {
      v = this.model.read(offset, size, userData);
    } catch (e) {
      this.report.add(`${this.where}: read(offset ${hex(offset)}, size ${size}) threw ${describe(e)}`);
      return BAD_READ;
    }
    if (typeof v !== 'bigint') {
      this.report.add(`${this.where}: read(offset ${hex(offset)}, size ${size}) returned ${typeof v} ${String(v)}, not a bigint`);
      return BAD_READ;
    }
    if (v < 0n || v > sizeMask(size)) {
      this.report.add(`${this.where}: read(offset ${hex(offset)}, size ${size}) returned ${v < 0n ? v : hex(v)}, outside the ${size}-byte range`);
      return BAD_READ;
    }
    return v;
  }

  write(offset: bigint, size: number, value: bigint, userData: bigint): void {
    try {
      this.model.write(offset, size, value & sizeMask(size), userData);
    } catch (e) {
      this.report.add(`${this.where}: write(offset ${hex(offset)}, size ${size}, ${hex(value & sizeMask(size))}) threw ${describe(e)}`);
    }
  }

  eventfd(name: string, count: bigint): void {
    try {
      this.model.onEventfd?.(name, count);
    } catch (e) {
      this.report.add(`${this.where}: onEventfd(${JSON.stringify(name.length > 20 ? `${name.slice(0, 20)}...` : name)}, ${count}) threw ${describe(e)}`);
    }
  }

  backlog(queued: boolean): void {
    try {
      this.model.observeBacklog?.(queued);
    } catch (e) {
      this.report.add(`${this.where}: observeBacklog(${queued}) threw ${describe(e)}`);
    }
  }

  reset(): boolean {
    try {
      this.model.reset();
      return true;
    } catch (e) {
      this.report.add(`${this.where}: reset() threw ${describe(e)}`);
      return false;
    }
  }
}

/** The read results of a sweep: sizes 1/2/4/8 at every offset of [0, span), in that order. */
function sweepReads(p: Prober, span: number): bigint[] {
  const out: bigint[] = [];
  for (const size of ACCESS_SIZES) {
    for (let off = 0; off < span; off++) out.push(p.read(BigInt(off), size, 0n));
  }
  return out;
}

function sweepWrites(p: Prober, span: number, rng: Rng): void {
  for (const size of ACCESS_SIZES) {
    for (let off = 0; off < span; off++) p.write(BigInt(off), size, rng.u64(), rng.u64());
  }
}

/** One random access (or reset / eventfd / backlog observation); returns the read result, if a read. */
function randomStep(p: Prober, rng: Rng, span: number, listen: string[]): bigint | undefined {
  const kind = rng.below(1000);
  const size = rng.size();
  const where = rng.below(100);
  // Mostly inside the sweep window, where the registers are; sometimes anywhere at all.
  const offset = where < 85 ? BigInt(rng.below(span)) : where < 92 ? EDGE_OFFSETS[rng.below(EDGE_OFFSETS.length)] : rng.u64();
  const userData = rng.below(4) === 0 ? rng.u64() : BigInt(rng.below(4));
  if (kind < 470) return p.read(offset, size, userData);
  if (kind < 940) {
    p.write(offset, size, rng.u64(), userData);
    return undefined;
  }
  if (kind < 975) {
    const names = [...listen, ...EVENTFD_NAMES];
    p.eventfd(names[rng.below(names.length)], rng.below(3) === 0 ? EVENTFD_COUNTS[rng.below(EVENTFD_COUNTS.length)] : BigInt(1 + rng.below(4)));
    return undefined;
  }
  if (kind < 995) {
    p.backlog(rng.below(2) === 0);
    return undefined;
  }
  p.reset();
  return undefined;
}

/** Indexes (into a sweep's results) of reads that touch a volatile byte range. */
function volatileMask(span: number, volatile: { offset: number; size: number }[]): Set<number> {
  const skip = new Set<number>();
  if (!volatile.length) return skip;
  ACCESS_SIZES.forEach((size, s) => {
    for (let off = 0; off < span; off++) {
      if (volatile.some((r) => off < r.offset + r.size && r.offset < off + size)) skip.add(s * span + off);
    }
  });
  return skip;
}

function compareSweeps(report: Report, what: string, want: bigint[], got: bigint[], span: number, skip: Set<number>): void {
  let diffs = 0;
  let first = '';
  for (let i = 0; i < want.length; i++) {
    if (skip.has(i) || want[i] === BAD_READ || got[i] === BAD_READ || want[i] === got[i]) continue;
    if (diffs++ === 0) {
      const size = ACCESS_SIZES[Math.floor(i / span)];
      first = `read(offset ${hex(i % span)}, size ${size}) gave ${hex(got[i])} where it should give ${hex(want[i])}`;
    }
  }
  if (diffs) report.add(`${what}: ${diffs} reads differ, first ${first}`);
}

function create(def: DeviceDefinition, ctx: DeviceContext, report: Report, where: string): DeviceModel | undefined {
  try {
    return def.create(ctx);
  } catch (e) {
    report.add(`${where}: create() threw ${describe(e)}`);
    return undefined;
  }
}

/**
 * Run the conformance suite against a device definition; returns the violations (empty = conformant).
 * Deterministic for a given seed. See the top of this file for what is checked and why.
 */
export function checkConformance(def: DeviceDefinition, opts: ConformanceOptions = {}): string[] {
  const report = new Report(opts.maxViolations ?? 50);
  const seed = opts.seed ?? 1;
  const span = Math.max(0, Math.floor(def.regionSize)) + SWEEP_SLACK;
  const listen = def.listen ?? [];
  const skip = volatileMask(span, opts.volatile ?? []);
  const fresh = () => fakeDeviceContext({ config: opts.config });

  // Power-on state: a sweep of a model nobody touched.
  const poweredOn = fresh();
  const a = create(def, poweredOn.ctx, report, 'create');
  if (!a) return report.result();
  const powerOnSweep = sweepReads(new Prober(a, report, 'fresh model'), span);

  // The same sweep right after reset(), then after dirtying the model (every write, large offsets,
  // eventfds, a random mix) and reset() again. Guest RAM is restored before each sweep.
  const dirtied = fresh();
  const b = create(def, dirtied.ctx, report, 'create');
  if (!b) return report.result();
  const pb = new Prober(b, report, 'reset check');
  const ramBefore = dirtied.ram.slice();
  if (!pb.reset()) return report.result();
  const resetSweep = sweepReads(pb, span);
  const rng = new Rng(seed);
  sweepWrites(pb, span, rng);
  sweepReads(pb, span);
  const large = new Prober(b, report, 'large offsets');
  const largeOffsets = [...EDGE_OFFSETS, ...Array.from({ length: 64 }, () => rng.u64())];
  for (const off of largeOffsets) {
    for (const size of ACCESS_SIZES) {
      large.read(off, size, rng.u64());
      large.write(off, size, rng.u64(), rng.u64());
    }
  }
  const ev = new Prober(b, report, 'eventfds');
  for (const name of [...listen, ...EVENTFD_NAMES]) for (const count of EVENTFD_COUNTS) ev.eventfd(name, count);
  for (let i = 0; i < 2000; i++) randomStep(pb, rng, span, listen);
  if (pb.reset()) {
    dirtied.ram.set(ramBefore);
    compareSweeps(report, 'after writes and reset()', resetSweep, sweepReads(pb, span), span, skip);
  }
  compareSweeps(report, 'after reset() versus power-on', powerOnSweep, resetSweep, span, skip);

  // A long seeded random sequence, twice on two fresh models: never throws, reads in range, and
  // the same reads both times.
  const steps = opts.randomAccesses ?? 20000;
  const runs: bigint[][] = [];
  for (let run = 0; run < 2; run++) {
    const c = create(def, fresh().ctx, report, 'create');
    if (!c) return report.result();
    const pc = new Prober(c, report, `random sequence (seed ${seed})`);
    const r = new Rng(seed ^ 0x5eed);
    const reads: bigint[] = [];
    for (let i = 0; i < steps; i++) {
      const v = randomStep(pc, r, span, listen);
      if (v !== undefined) reads.push(v);
    }
    runs.push(reads);
    // A model that failed the first run would only repeat its violations.
    if (report.failed) break;
  }
  if (runs.length === 2 && opts.deterministic !== false && skip.size === 0) {
    const i = runs[0].findIndex((v, k) => v !== runs[1][k]);
    if (i >= 0) report.add(`random sequence (seed ${seed}): read #${i} gave ${hex(runs[1][i])} on the second run and ${hex(runs[0][i])} on the first: the model depends on something besides its accesses`);
  }

  // A bare context: the manifest gave no eventfds and no guest memory.
  const bare = fakeDeviceContext({ config: opts.config, ramSize: 0, eventfds: [] });
  const d = create(def, bare.ctx, report, 'create (no eventfds, no memory)');
  if (!d) return report.result();
  const pd = new Prober(d, report, 'no eventfds, no memory');
  sweepWrites(pd, span, rng);
  sweepReads(pd, span);
  for (const name of listen) pd.eventfd(name, 1n);
  for (let i = 0; i < 2000; i++) randomStep(pd, rng, span, listen);
  return report.result();
}
