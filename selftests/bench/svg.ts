// The chart of a run: a hand-written SVG (no dependency) with latency and rate panels and the ratios.

import { CaseResult, format_value } from '../kvm/lib/perf';
import { RatioResult } from './stats';

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
