// The benchmark runner (`npm run bench`): runs the kvm *_perf_test programs, pools their results over
// several passes, prints the table and the ratios that matter, and writes JSON and an SVG chart.
//
// The machine is shared and noisy: a program interleaves the rounds of all its cases, and a full run
// makes several passes over all programs and pools every round, so a burst of someone else's load
// spreads over all cases instead of spoiling one. Each case reports the median and the 10th/90th
// percentile of its per-round values; a ratio of two cases of one program is the median of their
// per-round ratios, otherwise the ratio of their medians. The jobs live in selftests/bench/:
// cli.ts (options), schedule.ts (running programs), stats.ts (pooling, ratios), ratios.ts (what is
// reported), report.ts (table, JSON) and svg.ts (the chart).

import * as os from 'node:os';
import * as path from 'node:path';
import { writeFdSync } from './kselftest';
import { killGroup, UsageError } from './run_kselftest';
import { CaseResult } from './kvm/lib/perf';
import { BenchOptions, EXIT_USAGE, parseBenchArgs, USAGE } from './bench/cli';
import { CASE_ORDER } from './bench/ratios';
import { formatTable, machineInfo, resultsJson, writeResults } from './bench/report';
import { clearStatus, discoverPerfTests, elapsed, runningGroup, runProgram, say, started, status } from './bench/schedule';
import { computeRatios, poolCase } from './bench/stats';
import { renderSvg } from './bench/svg';

const PERF_DIR = path.join(__dirname, 'kvm');

async function main(argv: readonly string[]): Promise<number> {
  let o: BenchOptions;
  try {
    o = parseBenchArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    writeFdSync(2, `run_bench: ${e.message}\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (o.help) {
    writeFdSync(1, USAGE);
    return 0;
  }
  const loadStart = os.loadavg();
  let programs = discoverPerfTests(PERF_DIR);
  const unknownProgram = o.programs.find((n) => !programs.some((p) => p.name === n));
  if (programs.length && unknownProgram !== undefined) {
    writeFdSync(2, `run_bench: no perf test program named '${unknownProgram}' (there are: ${programs.map((p) => p.name).join(', ')})\n`);
    return EXIT_USAGE;
  }
  if (o.programs.length) programs = programs.filter((p) => o.programs.includes(p.name));
  if (programs.length === 0) {
    writeFdSync(2, `run_bench: no *_perf_test programs found in ${PERF_DIR}${o.programs.length ? ` named ${o.programs.join(', ')}` : ''} (npm run build first)\n`);
    return 1;
  }
  const args = ['--reps', String(o.reps), ...(o.quick ? ['--quick'] : []), ...o.cases.flatMap((c) => ['--case', c])];
  const timeoutS = o.quick ? 120 : 900;
  say(`# run_bench: ${programs.length} programs x ${o.passes} pass(es), ${o.reps} rounds per case and pass${o.quick ? ', --quick' : ''}; load average ${loadStart.map((x) => x.toFixed(2)).join(' ')}`);
  const parts = new Map<string, CaseResult[]>();
  let failures = 0;
  for (let pass = 1; pass <= o.passes; pass++) {
    for (const p of programs) {
      const label = `pass ${pass}/${o.passes} ${p.name}`;
      status(`${label}: starting`);
      const run = await runProgram(p.file, args, timeoutS, label, o.verbose);
      for (const r of run.results) {
        r.program = p.name;
        if (!parts.has(r.name)) parts.set(r.name, []);
        parts.get(r.name)!.push(r);
      }
      const ok = !run.timedOut && (run.code === 0 || run.code === 4);
      const what = run.timedOut ? `TIMEOUT after ${timeoutS} s` : run.signal ? `killed by ${run.signal}` : `exit ${run.code}`;
      say(`# pass ${pass}/${o.passes} ${p.name}: ${run.results.length} cases, ${what}, ${run.seconds.toFixed(1)} s`);
      if (!ok) {
        failures++;
        if (!o.verbose) for (const l of run.output.slice(-30)) say(`#   ${l}`);
      }
    }
  }
  clearStatus();
  // A --case that matched nothing is a typo: say so, and keep the last results as they were.
  const unmatched = o.cases.filter((c) => ![...parts.keys()].some((n) => n.includes(c)));
  if (unmatched.length) {
    writeFdSync(2, `run_bench: no case matches ${unmatched.map((c) => `'${c}'`).join(', ')}; nothing written\n`);
    return EXIT_USAGE;
  }
  const pooled = new Map<string, CaseResult>();
  for (const [name, ps] of parts) pooled.set(name, poolCase(ps));
  const rank = (n: string) => (CASE_ORDER.includes(n) ? CASE_ORDER.indexOf(n) : CASE_ORDER.length);
  const cases = [...pooled.values()].sort((a, b) => rank(a.name) - rank(b.name) || (a.name < b.name ? -1 : 1));
  const ratioList = computeRatios(pooled);
  const machine = machineInfo(o, loadStart, started);
  say('');
  say(formatTable(cases, ratioList));

  const written = writeResults(o.json, resultsJson(cases, ratioList, machine), renderSvg(cases, ratioList, machine), started);
  say('');
  say(`# wrote ${written.join(', ')}`);
  say(`# ${cases.length} cases (${cases.filter((c) => c.skipped).length} skipped), ${failures} program failure(s), ${elapsed()} elapsed, load average now ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  return failures ? 1 : 0;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    clearStatus();
    if (runningGroup !== undefined) killGroup(runningGroup, 'SIGKILL');
    process.exit(130);
  });
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      clearStatus();
      writeFdSync(2, `run_bench: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
