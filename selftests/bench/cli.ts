// The benchmark runner's command line: its options, their defaults and the usage text.

import { UsageError } from '../run_kselftest';

export const EXIT_USAGE = 2;

export interface BenchOptions {
  quick: boolean;
  json?: string;
  passes: number;
  reps: number;
  cases: string[];
  programs: string[];
  verbose: boolean;
  help: boolean;
}

export const USAGE = `Usage: node dist/selftests/run_bench.js [options]     (npm run bench -- [options])
Runs the kvm *_perf_test programs and prints their results and ratios.

  --quick            smoke run: 1 pass, 2 rounds of few operations per case (CI)
  --json FILE        write the results to FILE and the chart next to it (FILE with .svg);
                     default: bench-results/latest.json (+ a timestamped copy)
  --passes N         passes over all programs, rounds pooled (default 4; --quick 1)
  --reps N           measured rounds per case and pass (default 2)
  --case NAME        only cases whose name contains NAME (repeatable)
  --program NAME     only this perf test program, e.g. dispatch_perf_test (repeatable)
  -v, --verbose      echo the programs' own output
  -h, --help         this text
`;

export function parseBenchArgs(argv: readonly string[]): BenchOptions {
  const o: BenchOptions = { quick: false, passes: 0, reps: 0, cases: [], programs: [], verbose: false, help: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      if (i + 1 >= argv.length) throw new UsageError(`option ${a} needs a value`);
      return argv[++i];
    };
    const count = (): number => {
      const t = value();
      if (!/^[1-9]\d*$/.test(t)) throw new UsageError(`${a} needs a positive integer, got '${t}'`);
      return Number(t);
    };
    switch (a) {
      case '--quick': o.quick = true; break;
      case '--json': o.json = value(); break;
      case '--passes': o.passes = count(); break;
      case '--reps': o.reps = count(); break;
      case '--case': o.cases.push(value()); break;
      case '--program': o.programs.push(value().replace(/\.js$/, '')); break;
      case '-v': case '--verbose': o.verbose = true; break;
      case '-h': case '--help': o.help = true; break;
      default: throw new UsageError(`unknown option '${a}'`);
    }
  }
  if (!o.passes) o.passes = o.quick ? 1 : 4;
  if (!o.reps) o.reps = 2;
  return o;
}
