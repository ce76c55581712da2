// The stress runner's command line, its verdict on a campaign's counts, and the figures table.

import { UsageError } from '../run_kselftest';
import { Campaign, CampaignResult, RSS_GROWTH_LIMIT_PCT, ZERO_TARGETS } from './campaign';

export const EXIT_USAGE = 2;

export interface StressOptions {
  /** Campaigns to run, in registry order. */
  campaigns: Campaign[];
  /** --iterations: overrides each campaign's own size. */
  iterations?: number;
  seed?: number;
  short: boolean;
  json?: string;
  /** --timeout: the bound of one campaign run, in seconds (default: boundSeconds()). */
  timeoutS?: number;
  help: boolean;
}

/** How one campaign run ended, as the runner reports it. */
export interface CampaignRun {
  name: string;
  iterations: number;
  seed: number;
  elapsedS: number;
  result: CampaignResult;
  /** The campaign threw, crashed or exceeded its bound: it is a failure whatever its counts say. */
  error?: string;
}

export function usage(campaigns: readonly Campaign[]): string {
  const width = Math.max(4, ...campaigns.map((c) => c.name.length));
  const list = campaigns.map((c) => `  ${c.name.padEnd(width)}  ${c.description} (long ${c.iterations}, short ${c.shortIterations})`);
  return `Usage: npm run stress -- NAME|all [options]     (node dist/selftests/run_stress.js ...)
Runs fault campaigns against the kernel-model and prints their counts against the targets.

  --iterations N   rounds per campaign (default: each campaign's long size)
  --short          each campaign's short size (the one the selftest collection runs)
  --seed S         seed of every random choice (default: chosen from the clock, printed)
  --json FILE      also write the results as JSON to FILE
  --timeout SECS   bound of one campaign run (default: 60 s + the campaign's per-round allowance, 0.1 s unless it says more)
  -h, --help       this text

Campaigns:
${list.join('\n') || '  (none registered)'}
`;
}

/** Parse the command line against the registered campaigns; throws UsageError naming the bad value. */
export function parseStressArgs(argv: readonly string[], registry: readonly Campaign[]): StressOptions {
  const o: StressOptions = { campaigns: [], short: false, help: false };
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      if (i + 1 >= argv.length) throw new UsageError(`option ${a} needs a value`);
      return argv[++i];
    };
    const count = (min: number): number => {
      const t = value();
      if (!/^\d+$/.test(t) || Number(t) < min || !Number.isSafeInteger(Number(t))) {
        throw new UsageError(`${a} needs a whole number >= ${min}, got '${t}'`);
      }
      return Number(t);
    };
    switch (a) {
      case '--iterations': o.iterations = count(1); break;
      case '--seed': o.seed = count(0); break;
      case '--short': o.short = true; break;
      case '--json': o.json = value(); break;
      case '--timeout': o.timeoutS = count(1); break;
      case '-h': case '--help': o.help = true; break;
      default:
        if (a.startsWith('-')) throw new UsageError(`unknown option '${a}'`);
        names.push(a);
    }
  }
  if (o.help) return o;
  if (o.short && o.iterations !== undefined) throw new UsageError('--short and --iterations exclude each other');
  if (!names.length) throw new UsageError('name a campaign, or all');
  for (const n of names) {
    if (n === 'all') continue;
    if (!registry.some((c) => c.name === n)) throw new UsageError(`no campaign named '${n}'`);
  }
  o.campaigns = names.includes('all') ? [...registry] : registry.filter((c) => names.includes(c.name));
  return o;
}

/** The rounds a campaign runs under these options. */
export function iterationsOf(c: Campaign, o: Pick<StressOptions, 'iterations' | 'short'>): number {
  return o.iterations ?? (o.short ? c.shortIterations : c.iterations);
}

/** The default bound of one campaign run: generous, so only a wedged campaign meets it. */
export function boundSeconds(campaign: Campaign, iterations: number): number {
  return 60 + Math.ceil(iterations * (campaign.secondsPerRound ?? 0.1));
}

/** The targets a run missed, each as 'name value (target)'; empty when every target is met. */
export function missedTargets(run: CampaignRun): string[] {
  const missed: string[] = [];
  if (run.error !== undefined) missed.push(`error: ${run.error}`);
  for (const k of ZERO_TARGETS) if (run.result[k] !== 0) missed.push(`${k} ${run.result[k]} (target 0)`);
  const rss = run.result.figures.rss_growth_pct;
  if (rss !== undefined && !(rss <= RSS_GROWTH_LIMIT_PCT)) missed.push(`rss_growth_pct ${rss} (target <= ${RSS_GROWTH_LIMIT_PCT})`);
  return missed;
}

/** Exit status of the runner: 0 when every run met every target, 1 otherwise (a run of nothing too). */
export function exitStatus(runs: readonly CampaignRun[]): number {
  return runs.length > 0 && runs.every((r) => missedTargets(r).length === 0) ? 0 : 1;
}

const fmt = (v: number | undefined): string => (v === undefined ? '-' : Number.isInteger(v) ? String(v) : v.toFixed(2));

/**
 * The figures as a Markdown table, one column per campaign: rounds, every zero-target count, the
 * campaigns' own figures, elapsed time, seed and verdict.
 */
export function formatTable(runs: readonly CampaignRun[]): string {
  const figureNames = [...new Set(runs.flatMap((r) => Object.keys(r.result.figures)))];
  const rows: string[][] = [['', 'target', ...runs.map((r) => r.name)]];
  rows.push(['rounds', '', ...runs.map((r) => fmt(r.result.rounds))]);
  for (const k of ZERO_TARGETS) rows.push([k, '0', ...runs.map((r) => fmt(r.result[k]))]);
  for (const f of figureNames) {
    rows.push([f, f === 'rss_growth_pct' ? `<= ${RSS_GROWTH_LIMIT_PCT}` : '', ...runs.map((r) => fmt(r.result.figures[f]))]);
  }
  rows.push(['elapsed s', '', ...runs.map((r) => r.elapsedS.toFixed(1))]);
  rows.push(['seed', '', ...runs.map((r) => String(r.seed))]);
  rows.push(['targets', '', ...runs.map((r) => (missedTargets(r).length ? (r.error !== undefined ? 'FAILED' : 'missed') : 'met'))]);
  const widths = rows[0].map((_, i) => Math.max(3, ...rows.map((row) => row[i].length)));
  const line = (row: string[]) => `| ${row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(rows[0]), rule, ...rows.slice(1).map(line)].join('\n');
}

/** The JSON the runner writes with --json. */
export function resultsJson(runs: readonly CampaignRun[], started: Date): object {
  return {
    started: started.toISOString(),
    node: process.version,
    campaigns: runs.map((r) => ({ ...r, missed: missedTargets(r), met: missedTargets(r).length === 0 })),
  };
}
