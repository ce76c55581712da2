import test from 'ava';
import { UsageError } from '../run_kselftest';
import { Campaign, emptyResult } from './campaign';
import { CampaignRun, exitStatus, formatTable, iterationsOf, missedTargets, parseStressArgs, usage } from './cli';

const campaign = (name: string, iterations = 100, shortIterations = 10): Campaign => ({
  name, description: `the ${name} campaign`, iterations, shortIterations, run: () => Promise.resolve(emptyResult()),
});
const REGISTRY = [campaign('alpha', 1000, 50), campaign('beta')];

const run = (over: Partial<CampaignRun> = {}, result: Partial<CampaignRun['result']> = {}): CampaignRun => ({
  name: 'alpha', iterations: 50, seed: 7, elapsedS: 1.25, result: { ...emptyResult(), rounds: 50, ...result }, ...over,
});

test('a campaign name selects that campaign, all selects every one in registry order', (t) => {
  t.deepEqual(parseStressArgs(['beta'], REGISTRY).campaigns.map((c) => c.name), ['beta']);
  t.deepEqual(parseStressArgs(['all'], REGISTRY).campaigns.map((c) => c.name), ['alpha', 'beta']);
  t.deepEqual(parseStressArgs(['beta', 'alpha'], REGISTRY).campaigns.map((c) => c.name), ['alpha', 'beta']);
});

test('--iterations, --seed, --json, --timeout and --short are parsed', (t) => {
  const o = parseStressArgs(['alpha', '--iterations', '20', '--seed', '0', '--json', 'out.json', '--timeout', '9'], REGISTRY);
  t.is(o.iterations, 20);
  t.is(o.seed, 0);
  t.is(o.json, 'out.json');
  t.is(o.timeoutS, 9);
  t.is(iterationsOf(REGISTRY[0], o), 20);
  t.is(iterationsOf(REGISTRY[0], parseStressArgs(['alpha', '--short'], REGISTRY)), 50);
  t.is(iterationsOf(REGISTRY[0], parseStressArgs(['alpha'], REGISTRY)), 1000);
});

test('an unknown campaign, an unknown option or a bad number is a UsageError naming it', (t) => {
  t.regex(t.throws(() => parseStressArgs(['gamma'], REGISTRY), { instanceOf: UsageError }).message, /'gamma'/);
  t.regex(t.throws(() => parseStressArgs(['alpha', '--iteration', '3'], REGISTRY), { instanceOf: UsageError }).message, /'--iteration'/);
  t.regex(t.throws(() => parseStressArgs(['alpha', '--iterations', '0'], REGISTRY), { instanceOf: UsageError }).message, /'0'/);
  t.regex(t.throws(() => parseStressArgs(['alpha', '--seed', 'x1'], REGISTRY), { instanceOf: UsageError }).message, /'x1'/);
  t.regex(t.throws(() => parseStressArgs(['alpha', '--json'], REGISTRY), { instanceOf: UsageError }).message, /needs a value/);
  t.throws(() => parseStressArgs([], REGISTRY), { instanceOf: UsageError });
  t.throws(() => parseStressArgs(['alpha', '--short', '--iterations', '5'], REGISTRY), { instanceOf: UsageError });
});

test('--help needs no campaign, and the usage text lists every campaign with its sizes', (t) => {
  t.true(parseStressArgs(['--help'], REGISTRY).help);
  const text = usage(REGISTRY);
  t.regex(text, /alpha +the alpha campaign \(long 1000, short 50\)/);
  t.regex(text, /beta +the beta campaign \(long 100, short 10\)/);
});

test('every zero-target count above 0 is a missed target', (t) => {
  t.deepEqual(missedTargets(run()), []);
  t.deepEqual(missedTargets(run({}, { hangs: 2, leakedFds: 1 })), ['hangs 2 (target 0)', 'leakedFds 1 (target 0)']);
  t.deepEqual(missedTargets(run({}, { undefinedErrnos: 1 })), ['undefinedErrnos 1 (target 0)']);
});

test('rss_growth_pct counts against its limit only when the figure is there', (t) => {
  t.deepEqual(missedTargets(run({}, { figures: { rss_growth_pct: 9.5 } })), []);
  t.deepEqual(missedTargets(run({}, { figures: { rss_growth_pct: 10.5 } })), ['rss_growth_pct 10.5 (target <= 10)']);
  t.deepEqual(missedTargets(run({}, { figures: { rss_growth_pct: NaN } })), ['rss_growth_pct NaN (target <= 10)']);
  t.deepEqual(missedTargets(run({}, { figures: { kicks: 28000 } })), []);
});

test('a run that failed or timed out misses its targets whatever its counts', (t) => {
  t.deepEqual(missedTargets(run({ error: 'no result within 60 s' })), ['error: no result within 60 s']);
});

test('the exit status is 0 only when every run met every target, and never for no run at all', (t) => {
  t.is(exitStatus([run(), run({ name: 'beta' })]), 0);
  t.is(exitStatus([run(), run({ name: 'beta' }, { lostWrites: 1 })]), 1);
  t.is(exitStatus([run({ error: 'threw' })]), 1);
  t.is(exitStatus([]), 1);
});

test('the table has a column per campaign and a row per target, figure, time, seed and verdict', (t) => {
  const text = formatTable([run({}, { figures: { messages: 50 } }), run({ name: 'beta', seed: 9 }, { hangs: 1, figures: { rss_growth_pct: 3.14159 } })]);
  const lines = text.split('\n');
  t.regex(lines[0], /\| +\| target \| +alpha \| +beta \|/);
  t.regex(text, /\| hangs +\| +0 \| +0 \| +1 \|/);
  t.regex(text, /\| rss_growth_pct +\| +<= 10 \| +- \| +3\.14 \|/);
  t.regex(text, /\| messages +\| +\| +50 \| +- \|/);
  t.regex(text, /\| seed +\| +\| +7 \| +9 \|/);
  t.regex(text, /\| targets +\| +\| +met \| +missed \|/);
  t.regex(text, /\| elapsed s +\| +\| +1\.3 \| +1\.3 \|/);
});
