// The results as the user sees them: the table on stdout, the machine a run was measured on, and the
// JSON and SVG files.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CaseResult } from '../kvm/lib/perf';
import { BenchOptions } from './cli';
import { RatioResult } from './stats';

const REPO = path.resolve(__dirname, '..', '..', '..');

function firstLine(cmd: string, args: string[]): string | undefined {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: REPO });
  return r.status === 0 ? r.stdout.split('\n')[0].trim() : undefined;
}

/** What a run was measured on (written into the JSON and the chart). */
export function machineInfo(o: BenchOptions, loadStart: number[], started: number): Record<string, unknown> {
  const cpus = os.cpus();
  let koffi: string | undefined;
  try {
    koffi = (JSON.parse(fs.readFileSync(path.join(REPO, 'node_modules', 'koffi', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    koffi = undefined;
  }
  const dirty = spawnSync('git', ['status', '--porcelain'], { encoding: 'utf8', cwd: REPO });
  return {
    hostname: os.hostname(),
    cpu_model: cpus[0]?.model ?? 'unknown',
    cpus: cpus.length,
    memory_mb: Math.round(os.totalmem() / 2 ** 20),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    koffi,
    cc: firstLine(process.env.CC ?? 'cc', ['--version']) ?? null,
    git_commit: firstLine('git', ['rev-parse', 'HEAD']) ?? null,
    git_dirty: dirty.status === 0 ? dirty.stdout.trim() !== '' : null,
    date: new Date(started).toISOString(),
    duration_s: Math.round((Date.now() - started) / 100) / 10,
    loadavg_start: loadStart.map((x) => Math.round(x * 100) / 100),
    loadavg_end: os.loadavg().map((x) => Math.round(x * 100) / 100),
    quick: o.quick,
    passes: o.passes,
    reps_per_pass: o.reps,
  };
}

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

function num(v: number, unit: CaseResult['unit']): string {
  if (unit === 'us') return v.toFixed(v < 100 ? 2 : 1);
  return v >= 1e3 ? `${(v / 1e3).toFixed(1)}k` : v.toFixed(0);
}

export function formatTable(cases: CaseResult[], ratios: RatioResult[]): string {
  const lines: string[] = [];
  const w = Math.max(36, ...cases.map((c) => c.name.length + 2));
  lines.push(`${pad('case', w)}${pad('unit', 7)}${pad('median', 10, true)}${pad('p10', 10, true)}${pad('p90', 10, true)}${pad('runs', 6, true)}${pad('ops', 10, true)}`);
  lines.push('-'.repeat(w + 53));
  for (const c of cases) {
    if (c.skipped) {
      lines.push(`${pad(c.name, w)}${pad(c.unit, 7)}  skipped: ${c.skipped}`);
      continue;
    }
    lines.push(`${pad(c.name, w)}${pad(c.unit, 7)}${pad(num(c.median, c.unit), 10, true)}${pad(num(c.p10, c.unit), 10, true)}${pad(num(c.p90, c.unit), 10, true)}${pad(String(c.runs), 6, true)}${pad(String(c.ops), 10, true)}`);
  }
  lines.push('');
  const rw = Math.max(50, ...ratios.map((r) => r.name.length + 4));
  lines.push(`${pad('ratio (of medians; * = median of paired rounds)', rw)}${pad('value', 8, true)}   ${pad('spread', 13)}  target`);
  lines.push('-'.repeat(rw + 40));
  for (const r of ratios) {
    const v = r.value === null ? '-' : r.value.toFixed(2);
    const spread = r.low === null || r.high === null ? '' : `${r.low.toFixed(2)}..${r.high.toFixed(2)}`;
    const t = r.target ? `${r.target}  ${r.value === null ? 'n/a' : r.met ? 'met' : 'MISSED'}` : '';
    lines.push(`${pad(r.name + (r.paired ? ' *' : ''), rw)}${pad(v, 8, true)}   ${pad(spread, 13)}  ${t}`);
  }
  return lines.join('\n');
}

/** The JSON document of a run. */
export function resultsJson(cases: CaseResult[], ratioList: RatioResult[], machine: Record<string, unknown>): string {
  const ratios: Record<string, number | null> = {};
  for (const r of ratioList) ratios[r.name] = r.value === null ? null : Math.round(r.value * 1000) / 1000;
  const targets = ratioList.filter((r) => r.target).map((r) => ({ ratio: r.name, target: r.target, value: ratios[r.name], met: r.met ?? null }));
  const json = {
    machine,
    cases: cases.map((c) => ({
      name: c.name, unit: c.unit, median: c.skipped ? null : c.median, p10: c.skipped ? null : c.p10, p90: c.skipped ? null : c.p90,
      ops: c.ops, runs: c.runs, samples: c.samples, timing: c.timing, program: c.program,
      ...(c.note ? { note: c.note } : {}), ...(c.skipped ? { skipped: c.skipped } : {}),
    })),
    ratios,
    targets,
  };
  return `${JSON.stringify(json, null, 2)}\n`;
}

/**
 * Write the JSON and the SVG: to `jsonFile` (and the .svg beside it), or to bench-results/ as
 * latest.* plus a timestamped copy. Returns the files written.
 */
export function writeResults(jsonFile: string | undefined, json: string, svg: string, started: number): string[] {
  const written: string[] = [];
  const write = (file: string, data: string) => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, data);
    written.push(path.relative(process.cwd(), file) || file);
  };
  if (jsonFile) {
    const file = path.resolve(jsonFile);
    write(file, json);
    write(file.replace(/\.json$/i, '') + '.svg', svg);
  } else {
    const dir = path.join(REPO, 'bench-results');
    const stamp = new Date(started).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    write(path.join(dir, `bench-${stamp}.json`), json);
    write(path.join(dir, `bench-${stamp}.svg`), svg);
    write(path.join(dir, 'latest.json'), json);
    write(path.join(dir, 'latest.svg'), svg);
  }
  return written;
}
