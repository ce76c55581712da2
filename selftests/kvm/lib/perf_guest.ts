// Guest code of the *_perf_test programs: tight loops of MMIO accesses that time themselves.
//
// Each loop runs a warm-up round (round 0) and then `reps` measured rounds. After every round the
// guest reports with GUEST_SYNC_ARGS(round, ops, t0, t1): t0/t1 are process.hrtime.bigint() taken in
// the vCPU thread right around the accesses, so a round's time is the guest's own view of the access
// path and contains no KVM_RUN or ucall overhead. The monotonic clock is the same in every process
// of the machine, so the host can also compare rounds of different vCPUs.

import { cpu_relax, GUEST_DONE, GUEST_FAIL, GUEST_SYNC_ARGS, readl, readq, writel } from './guest';

const now = () => process.hrtime.bigint();

function fail_value(what: string, got: bigint, want: bigint): void {
  GUEST_FAIL(`${what}: read 0x${got.toString(16)}, expected 0x${want.toString(16)}`);
}

/**
 * Write `pattern` to gpa once (the device echoes it back), then rounds of `ops` 4-byte reads, each
 * checked against the pattern. Used for ioregionfd reads and for the classic exit path alike: only
 * the host side differs.
 */
export function guest_read_loop(gpa: bigint, ops: bigint, reps: bigint, warmup: bigint, pattern: bigint): void {
  writel(gpa, pattern);
  for (let r = 0n; r <= reps; r++) {
    const n = r === 0n ? Number(warmup) : Number(ops);
    const t0 = now();
    for (let i = 0; i < n; i++) {
      const v = readl(gpa);
      if (v !== pattern) fail_value(`read ${i} of round ${r}`, v, pattern);
    }
    const t1 = now();
    GUEST_SYNC_ARGS(r, n, t0, t1);
  }
  GUEST_DONE();
}

/** Rounds of `ops` 4-byte writes of 0, 1, 2, ...; then one read must return the last value written. */
export function guest_write_loop(gpa: bigint, ops: bigint, reps: bigint, warmup: bigint): void {
  for (let r = 0n; r <= reps; r++) {
    const n = r === 0n ? Number(warmup) : Number(ops);
    const t0 = now();
    for (let i = 0; i < n; i++) writel(gpa, BigInt(i));
    // For posted writes this read is the fence: the device answers it only after consuming every
    // write before it on the same socket, so the round's time covers the device's work too.
    const last = readl(gpa);
    const t1 = now();
    if (n > 0 && last !== BigInt(n - 1)) fail_value(`fence after ${n} writes of round ${r}`, last, BigInt(n - 1));
    GUEST_SYNC_ARGS(r, n, t0, t1);
  }
  GUEST_DONE();
}

/**
 * Ring a doorbell (an ioeventfd address) `ops` times per round, then spin on RAM until the device
 * task has counted every ring (a u64 at counter_gpa it updates by DMA), so a round's time covers
 * the device's reads of the eventfd.
 */
export function guest_doorbell_loop(doorbell: bigint, ops: bigint, reps: bigint, warmup: bigint, counter_gpa: bigint): void {
  let total = readq(counter_gpa);
  for (let r = 0n; r <= reps; r++) {
    const n = r === 0n ? Number(warmup) : Number(ops);
    const t0 = now();
    for (let i = 0; i < n; i++) writel(doorbell, 1n);
    total += BigInt(n);
    while (readq(counter_gpa) < total) cpu_relax();
    const t1 = now();
    const seen = readq(counter_gpa);
    if (seen !== total) fail_value(`ring count after round ${r}`, seen, total);
    GUEST_SYNC_ARGS(r, n, t0, t1);
  }
  GUEST_DONE();
}
