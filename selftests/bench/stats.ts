// The statistics of a run: rounds pooled over passes into medians and percentiles, and the ratios
// (paired when both cases came from one program, so a shared machine's drift cancels).

import { CaseResult, percentile } from '../kvm/lib/perf';
import { RATIOS } from './ratios';

/** Pool the rounds of one case over all passes into one result. */
export function poolCase(parts: CaseResult[]): CaseResult {
  const measured = parts.filter((p) => !p.skipped && p.samples.length > 0);
  const first = parts[0];
  if (measured.length === 0) {
    return { ...first, median: NaN, p10: NaN, p90: NaN, ops: 0, runs: 0, samples: [], skipped: first.skipped ?? 'no result' };
  }
  const samples = measured.flatMap((p) => p.samples);
  const { skipped: _skipped, ...rest } = measured[0];
  return {
    ...rest, median: percentile(samples, 50), p10: percentile(samples, 10), p90: percentile(samples, 90),
    ops: measured.reduce((n, p) => n + p.ops, 0), runs: samples.length, samples,
  };
}

export interface RatioResult {
  name: string;
  value: number | null;
  /**
   * The spread: numerator p10 / denominator p90 .. numerator p90 / denominator p10, or for a paired
   * ratio the p10..p90 of the per-round ratios.
   */
  low: number | null;
  high: number | null;
  paired: boolean;
  target?: string;
  met?: boolean;
}

export function computeRatios(cases: Map<string, CaseResult>): RatioResult[] {
  return RATIOS.map((r) => {
    const a = cases.get(r.num);
    const b = cases.get(r.den);
    const name = `${r.num}/${r.den}`;
    const ok = (c: CaseResult | undefined): c is CaseResult => c !== undefined && !c.skipped && Number.isFinite(c.median) && c.median > 0;
    if (!ok(a) || !ok(b)) return { name, value: null, low: null, high: null, paired: false, ...(r.target ? { target: `${r.target.op} ${r.target.value}` } : {}) };
    let res: RatioResult;
    if (a.program !== undefined && a.program === b.program && a.samples.length === b.samples.length) {
      const per = a.samples.map((x, i) => x / b.samples[i]);
      res = { name, value: percentile(per, 50), low: percentile(per, 10), high: percentile(per, 90), paired: true };
    } else {
      res = { name, value: a.median / b.median, low: a.p10 / b.p90, high: a.p90 / b.p10, paired: false };
    }
    const value = res.value as number;
    if (r.target) {
      res.target = `${r.target.op} ${r.target.value}`;
      res.met = r.target.op === '<=' ? value <= r.target.value : value >= r.target.value;
    }
    return res;
  });
}
