// Checks the benchmark runner's pure parts in memory: option parsing, pooling rounds over passes,
// paired and unpaired ratios with their targets, the table and the chart.

import test from 'ava';
import type { CaseResult } from '../kvm/lib/perf';
import { UsageError } from '../run_kselftest';
import { parseBenchArgs } from './cli';
import { formatTable } from './report';
import { computeRatios, poolCase } from './stats';
import { renderSvg } from './svg';

function result(name: string, samples: number[], program = 'p', unit: CaseResult['unit'] = 'us'): CaseResult {
  return { name, unit, median: 0, p10: 0, p90: 0, ops: samples.length * 10, runs: samples.length, samples, timing: 't', program };
}

test('options: defaults, --quick, repeatable filters, and usage errors', (t) => {
  t.like(parseBenchArgs([]), { quick: false, passes: 4, reps: 2, cases: [], programs: [] });
  t.like(parseBenchArgs(['--quick', '--case', 'a', '--case', 'b', '--program', 'x_perf_test.js']), { passes: 1, cases: ['a', 'b'], programs: ['x_perf_test'] });
  for (const bad of [['--passes', '0'], ['--reps'], ['--bogus']]) t.throws(() => parseBenchArgs(bad), { instanceOf: UsageError });
});

test('pooling: the rounds of every pass make one median and spread; a case skipped everywhere stays skipped', (t) => {
  const pooled = poolCase([result('a', [1, 2, 3]), result('a', [4, 5, 6])]);
  t.is(pooled.runs, 6);
  t.is(pooled.ops, 60);
  t.true(pooled.median >= 3 && pooled.median <= 4);
  const skipped = poolCase([{ ...result('s', []), skipped: 'no qemu' }]);
  t.is(skipped.skipped, 'no qemu');
  t.true(Number.isNaN(skipped.median));
});

test('ratios: paired when both cases come from one program (median of per-round ratios), targets met or missed', (t) => {
  const cases = new Map<string, CaseResult>();
  const add = (c: CaseResult) => cases.set(c.name, poolCase([c]));
  add(result('ioregionfd_read_rtt', [12, 13, 14]));
  add(result('floor_c_rtt', [10, 10, 10]));
  add(result('exit_path_read_rtt', [30, 30, 30], 'other'));
  const ratios = computeRatios(cases);
  const read = ratios.find((r) => r.name === 'ioregionfd_read_rtt/floor_c_rtt')!;
  t.true(read.paired);
  t.is(read.value, 1.3);
  t.false(read.met, '1.3 misses the <= 1.15 target');
  const exit = ratios.find((r) => r.name === 'exit_path_read_rtt/ioregionfd_read_rtt')!;
  t.false(exit.paired);
  t.is(exit.value, 30 / 13);
  t.true(exit.met);
  t.is(ratios.find((r) => r.name === 'ioregionfd_read_rtt_1000_regions/ioregionfd_read_rtt')!.value, null, 'a ratio of a case not measured is null');
  const table = formatTable([...cases.values()], ratios);
  t.regex(table, /ioregionfd_read_rtt\/floor_c_rtt \*\s+1\.30 .* <= 1\.15 {2}MISSED/);
  t.regex(renderSvg([...cases.values()], ratios, { date: 'now', cpus: 2, cpu_model: 'x' }), /^<svg [\s\S]*ioregionfd_read_rtt[\s\S]*<\/svg>\n$/);
});
