// The benchmark runner (`npm run bench`): runs the kvm *_perf_test programs, pools their results over
// several passes, prints the table and the ratios that matter, and writes JSON and an SVG chart.
//
// The machine is shared and noisy: a program interleaves the rounds of all its cases, and a full run
// makes several passes over all programs and pools every round, so a burst of someone else's load
// spreads over all cases instead of spoiling one. Each case reports the median and the 10th/90th
// percentile of its per-round values; a ratio of two cases of one program is the median of their
// per-round ratios, otherwise the ratio of their medians.

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { writeFdSync } from './kselftest';
import { killGroup, UsageError } from './run_kselftest';
import { BENCH_LINE, CaseResult, format_value, percentile, PROGRESS_LINE } from './kvm/lib/perf';

const REPO = path.resolve(__dirname, '..', '..');
const PERF_DIR = path.join(__dirname, 'kvm');
const DEFAULT_OUT_DIR = path.join(REPO, 'bench-results');
/** Programs run in this order; any other *_perf_test follows by name. */
const ORDER = ['dispatch_perf_test', 'ioregionfd_vcpus_perf_test'];
const EXIT_USAGE = 2;

/** Every case of the issue's table (and the extra floor_node_posted_rate and mmio_exit_rtt), in display order. */
export const CASE_ORDER = [
  'floor_c_rtt', 'floor_node_rtt', 'ioregionfd_read_rtt', 'ioregionfd_read_rtt_1000_regions', 'ioregionfd_write_rtt',
  'exit_path_read_rtt', 'mmio_exit_rtt', 'floor_c_posted_rate', 'floor_node_posted_rate', 'ioregionfd_posted_write_rate', 'ioeventfd_write_rate',
  'ioregionfd_read_rate_vcpus_1', 'ioregionfd_read_rate_vcpus_2', 'ioregionfd_read_rate_vcpus_4',
  'ioregionfd_read_rate_vcpus_2_shared', 'ioregionfd_read_rate_vcpus_4_shared',
];

export interface RatioSpec {
  num: string;
  den: string;
  /** The issue's target for this ratio, if it has one. */
  target?: { op: '<=' | '>='; value: number };
}

/**
 * The ratios the issue asks for, then the ones that describe vCPU scaling and the shared fd's cost.
 * Two cases of one program were measured round by round alternately, so their ratio is the median
 * of the per-round ratios ("paired"), which cancels the drift of a shared machine between rounds.
 */
export const RATIOS: RatioSpec[] = [
  { num: 'ioregionfd_read_rtt', den: 'floor_c_rtt', target: { op: '<=', value: 1.3 } },
  { num: 'ioregionfd_read_rtt', den: 'floor_node_rtt' },
  { num: 'exit_path_read_rtt', den: 'ioregionfd_read_rtt', target: { op: '>=', value: 2.2 } },
  { num: 'ioregionfd_posted_write_rate', den: 'floor_c_posted_rate', target: { op: '>=', value: 0.75 } },
  { num: 'ioregionfd_read_rtt_1000_regions', den: 'ioregionfd_read_rtt', target: { op: '<=', value: 1.05 } },
  { num: 'ioregionfd_posted_write_rate', den: 'floor_node_posted_rate' },
  { num: 'mmio_exit_rtt', den: 'ioregionfd_read_rtt' },
  { num: 'floor_node_rtt', den: 'floor_c_rtt' },
  { num: 'ioregionfd_read_rate_vcpus_2', den: 'ioregionfd_read_rate_vcpus_1' },
  { num: 'ioregionfd_read_rate_vcpus_4', den: 'ioregionfd_read_rate_vcpus_1' },
  { num: 'ioregionfd_read_rate_vcpus_2_shared', den: 'ioregionfd_read_rate_vcpus_2' },
  { num: 'ioregionfd_read_rate_vcpus_4_shared', den: 'ioregionfd_read_rate_vcpus_4' },
  // NVMe (nvme_perf_test): IOPS ratios, and per-I/O counts as (events per second) / (I/Os per second).
  { num: 'nvme_randread_qd32_ioregionfd', den: 'nvme_randread_qd32_exit', target: { op: '>=', value: 2 } },
  { num: 'nvme_randread_qd32_best', den: 'nvme_randread_floor', target: { op: '>=', value: 0.5 } },
  { num: 'nvme_randread_qd32_ioeventfd_doorbells', den: 'nvme_randread_qd32_ioeventfd', target: { op: '<=', value: 0.0625 } },
  { num: 'nvme_randwrite_qd32_ioeventfd_doorbells', den: 'nvme_randwrite_qd32_ioeventfd', target: { op: '<=', value: 0.0625 } },
  { num: 'nvme_randwrite_qd32_ioregionfd', den: 'nvme_randwrite_qd32_exit' },
  { num: 'nvme_randwrite_qd32_ioeventfd', den: 'nvme_randwrite_floor' },
  { num: 'nvme_randread_qd32_ioregionfd_doorbells', den: 'nvme_randread_qd32_ioregionfd' },
  { num: 'nvme_randread_qd32_exit_doorbells', den: 'nvme_randread_qd32_exit' },
  { num: 'nvme_randread_qd32_ioregionfd_irqs', den: 'nvme_randread_qd32_ioregionfd' },
  { num: 'nvme_randread_qd32_ioeventfd_irqs', den: 'nvme_randread_qd32_ioeventfd' },
  { num: 'nvme_randread_qd32_exit_irqs', den: 'nvme_randread_qd32_exit' },
];

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


const USAGE = `Usage: node dist/selftests/run_bench.js [options]     (npm run bench -- [options])
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

/** The *_perf_test programs next to the kvm selftests, in ORDER. */
export function discoverPerfTests(dir: string): { name: string; file: string }[] {
  let files: string[];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('_perf_test.js'));
  } catch {
    files = [];
  }
  const rank = (n: string) => (ORDER.includes(n) ? ORDER.indexOf(n) : ORDER.length);
  return files
    .map((f) => ({ name: f.slice(0, -'.js'.length), file: path.join(dir, f) }))
    .sort((a, b) => rank(a.name) - rank(b.name) || (a.name < b.name ? -1 : 1));
}

// ---- status line ----------------------------------------------------------------------------------

const tty = process.stderr.isTTY === true;
let statusShown = false;
const started = Date.now();

function elapsed(): string {
  const s = Math.round((Date.now() - started) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function status(text: string): void {
  if (!tty) return;
  const width = process.stderr.columns || 100;
  writeFdSync(2, `\r\x1b[K${`[${elapsed()}] ${text}`.slice(0, width - 1)}`);
  statusShown = true;
}

function clearStatus(): void {
  if (tty && statusShown) writeFdSync(2, '\r\x1b[K');
  statusShown = false;
}

/** A line for the user, above the status line. */
function say(text: string, fd = 1): void {
  clearStatus();
  writeFdSync(fd, text.endsWith('\n') ? text : `${text}\n`);
}

// ---- running one program ---------------------------------------------------------------------------

interface ProgramRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  results: CaseResult[];
  output: string[];
  seconds: number;
}

let runningGroup: number | undefined;


function runProgram(file: string, args: string[], timeoutS: number, label: string, verbose: boolean): Promise<ProgramRun> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    // Own process group: a timeout takes down the program's kernel-model and device tasks too.
    const child = spawn(process.execPath, [file, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, BENCH_PROGRESS: '1', KSFT_TAP_LEVEL: '1' },
    });
    runningGroup = child.pid;
    const run: ProgramRun = { code: null, signal: null, timedOut: false, results: [], output: [], seconds: 0 };
    const onLine = (line: string, fromStderr: boolean) => {
      if (!fromStderr && line.startsWith(PROGRESS_LINE)) {
        const [name, frac] = line.slice(PROGRESS_LINE.length).split(' ');
        status(`${label}: ${name} ${frac.startsWith('0/') ? 'warm-up' : `round ${frac}`}`);
        return;
      }
      if (!fromStderr && line.startsWith(BENCH_LINE)) {
        try {
          const r = JSON.parse(line.slice(BENCH_LINE.length)) as CaseResult;
          run.results.push(r);
          status(`${label}: ${r.name} ${r.skipped ? 'skipped' : format_value(r.median, r.unit)}`);
        } catch {
          run.output.push(line);
        }
        return;
      }
      run.output.push(line);
      if (verbose || fromStderr) say(`  ${line}`, fromStderr ? 2 : 1);
    };
    const pump = (stream: NodeJS.ReadableStream, fromStderr: boolean) => {
      const dec = new StringDecoder('utf8');
      let buf = '';
      stream.on('data', (chunk: Buffer) => {
        buf += dec.write(chunk);
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          onLine(buf.slice(0, nl), fromStderr);
          buf = buf.slice(nl + 1);
        }
      });
      stream.on('end', () => {
        if (buf) onLine(buf, fromStderr);
      });
    };
    pump(child.stdout!, false);
    pump(child.stderr!, true);
    const timer = setTimeout(() => {
      run.timedOut = true;
      if (child.pid) killGroup(child.pid, 'SIGTERM');
      setTimeout(() => child.pid && killGroup(child.pid, 'SIGKILL'), 2000).unref();
    }, timeoutS * 1000);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      runningGroup = undefined;
      resolve(run);
    };
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      // Whatever the program left behind in its group (it should have left nothing) goes too; its
      // kernel-model shares our pipes, so only then do they close.
      if (child.pid) killGroup(child.pid, 'SIGKILL');
      run.code = code;
      run.signal = signal;
      run.seconds = (Date.now() - t0) / 1000;
      setTimeout(finish, 5000).unref();
    });
    // 'close' comes once the pipes are drained: every result line has been seen.
    child.once('close', finish);
  });
}

// ---- pooling, ratios, machine ------------------------------------------------------------------------

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

function firstLine(cmd: string, args: string[]): string | undefined {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: REPO });
  return r.status === 0 ? r.stdout.split('\n')[0].trim() : undefined;
}

function machineInfo(o: BenchOptions, loadStart: number[]): Record<string, unknown> {
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

// ---- output ------------------------------------------------------------------------------------------

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

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function barColor(name: string): string {
  if (name.startsWith('floor_c')) return '#7f7f7f';
  if (name.startsWith('floor_node')) return '#b0b0b0';
  if (name.startsWith('exit_path')) return '#d9730d';
  if (name.startsWith('ioeventfd')) return '#2e9e55';
  if (name.includes('_shared')) return '#7d5fb2';
  return '#2f6fb6';
}

/** A hand-written SVG: one panel of latency bars (µs), one of rate bars (k ops/s), with p10..p90 whiskers. */
export function renderSvg(cases: CaseResult[], ratios: RatioResult[], machine: Record<string, unknown>): string {
  const W = 960;
  const labelW = 300;
  const barW = 500;
  const rowH = 26;
  const out: string[] = [];
  let y = 0;
  const text = (x: number, yy: number, s: string, attrs = '') => out.push(`<text x="${+x.toFixed(1)}" y="${+yy.toFixed(1)}" ${attrs}>${esc(s)}</text>`);
  y += 30;
  text(16, y, 'ioregionfd-emu benchmarks', 'font-size="18" font-weight="bold"');
  y += 20;
  const commit = typeof machine.git_commit === 'string' ? machine.git_commit.slice(0, 10) : 'unknown';
  text(16, y, `${String(machine.date)} · commit ${commit}${machine.git_dirty ? '+dirty' : ''} · ${String(machine.cpus)} × ${String(machine.cpu_model)} · node ${String(machine.node)} · load ${(machine.loadavg_start as number[])?.[0]}→${(machine.loadavg_end as number[])?.[0]}${machine.quick ? ' · QUICK (smoke run)' : ''}`, 'font-size="11" fill="#555"');
  y += 10;
  const panel = (title: string, rows: CaseResult[], scale: number, unitLabel: string) => {
    const unit = rows[0]?.unit;
    if (rows.length === 0) return;
    y += 34;
    text(16, y, title, 'font-size="14" font-weight="bold"');
    y += 8;
    const max = Math.max(1e-9, ...rows.filter((c) => !c.skipped).map((c) => c.p90 / scale));
    const x0 = labelW;
    const px = (v: number) => x0 + (v / max) * barW;
    for (const c of rows) {
      const cy = y + 4;
      text(x0 - 8, cy + 15, c.name, 'font-size="12" text-anchor="end"');
      if (c.skipped) {
        text(x0 + 4, cy + 15, `skipped: ${c.skipped}`, 'font-size="11" fill="#999" font-style="italic"');
      } else {
        const m = c.median / scale;
        out.push(`<rect x="${x0}" y="${cy + 3}" width="${Math.max(1, px(m) - x0).toFixed(1)}" height="${rowH - 10}" fill="${barColor(c.name)}"><title>${esc(`${c.name}: median ${format_value(c.median, c.unit)}, p10 ${format_value(c.p10, c.unit)}, p90 ${format_value(c.p90, c.unit)}, ${c.runs} runs, ${c.ops} ops`)}</title></rect>`);
        const wy = cy + 3 + (rowH - 10) / 2;
        out.push(`<line x1="${px(c.p10 / scale).toFixed(1)}" y1="${wy}" x2="${px(c.p90 / scale).toFixed(1)}" y2="${wy}" stroke="#222" stroke-width="1.2"/>`);
        for (const v of [c.p10, c.p90]) out.push(`<line x1="${px(v / scale).toFixed(1)}" y1="${wy - 5}" x2="${px(v / scale).toFixed(1)}" y2="${wy + 5}" stroke="#222" stroke-width="1.2"/>`);
        text(Math.max(px(m), px(c.p90 / scale)) + 6, cy + 15, `${(m).toFixed(unit === 'us' ? 2 : 1)} ${unitLabel}`, 'font-size="11"');
      }
      y += rowH;
    }
    out.push(`<line x1="${x0}" y1="${y - rowH * rows.length + 2}" x2="${x0}" y2="${y + 2}" stroke="#444"/>`);
  };
  const rates = cases.filter((c) => c.unit === 'ops/s');
  panel('Round-trip latency (median, whiskers p10..p90; shorter is better)', cases.filter((c) => c.unit === 'us'), 1, 'µs');
  panel('One-way write rates (median, whiskers p10..p90; longer is better)', rates.filter((c) => !c.name.includes('read_rate')), 1000, 'k ops/s');
  panel('Aggregate read rates by vCPUs (median, whiskers p10..p90; longer is better)', rates.filter((c) => c.name.includes('read_rate')), 1000, 'k ops/s');
  y += 34;
  text(16, y, 'Ratios (of medians)', 'font-size="14" font-weight="bold"');
  for (const r of ratios) {
    y += 18;
    const v = r.value === null ? 'n/a' : r.value.toFixed(2);
    const t = r.target ? `   target ${r.target}: ${r.value === null ? 'n/a' : r.met ? 'met' : 'missed'}` : '';
    const color = r.target && r.value !== null ? (r.met ? '#2e7d32' : '#c62828') : '#222';
    text(24, y, `${r.name}${r.paired ? ' (paired rounds)' : ''} = ${v}${t}`, `font-size="12" fill="${color}"`);
  }
  y += 24;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif">`,
    `<rect width="${W}" height="${y}" fill="#fff"/>`,
    ...out,
    '</svg>',
    '',
  ].join('\n');
}

// ---- main ---------------------------------------------------------------------------------------------

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
  const pooled = new Map<string, CaseResult>();
  for (const [name, ps] of parts) pooled.set(name, poolCase(ps));
  const rank = (n: string) => (CASE_ORDER.includes(n) ? CASE_ORDER.indexOf(n) : CASE_ORDER.length);
  const cases = [...pooled.values()].sort((a, b) => rank(a.name) - rank(b.name) || (a.name < b.name ? -1 : 1));
  const ratioList = computeRatios(pooled);
  const machine = machineInfo(o, loadStart);
  say('');
  say(formatTable(cases, ratioList));

  const ratios: Record<string, number | null> = {};
  for (const r of ratioList) ratios[r.name] = r.value === null ? null : Math.round(r.value * 1000) / 1000;
  const targets = ratioList.filter((r) => r.target).map((r) => ({ ratio: r.name, target: r.target, value: ratios[r.name], met: r.met ?? null }));
  const json = {
    machine,
    cases: cases.map((c) => ({
      name: c.name, unit: c.unit, median: c.skipped ? null : c.median, p10: c.skipped ? null : c.p10, p90: c.skipped ? null : c.p90,
      ops: c.ops, runs: c.runs, samples: c.samples, timing: c.timing, program: c.program, ...(c.note ? { note: c.note } : {}), ...(c.skipped ? { skipped: c.skipped } : {}),
    })),
    ratios,
    targets,
  };
  const svg = renderSvg(cases, ratioList, machine);
  const written: string[] = [];
  const write = (file: string, data: string) => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, data);
    written.push(path.relative(process.cwd(), file) || file);
  };
  const text = `${JSON.stringify(json, null, 2)}\n`;
  if (o.json) {
    const file = path.resolve(o.json);
    write(file, text);
    write(file.replace(/\.json$/i, '') + '.svg', svg);
  } else {
    const stamp = new Date(started).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    write(path.join(DEFAULT_OUT_DIR, `bench-${stamp}.json`), text);
    write(path.join(DEFAULT_OUT_DIR, `bench-${stamp}.svg`), svg);
    write(path.join(DEFAULT_OUT_DIR, 'latest.json'), text);
    write(path.join(DEFAULT_OUT_DIR, 'latest.svg'), svg);
  }
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
