// fault_campaigns_test: the short form of every fault campaign of `npm run stress`, with a fixed seed,
// one test per campaign. A test fails when any count whose target is 0 (hangs, kernel-model exits,
// undefined errnos, lost / duplicated / reordered writes, leaked fds or processes) is not 0, or when
// churn's RSS growth is over its limit; the campaign's examples are printed as diagnostics, and
// `npm run stress -- NAME --short --seed 1` repeats the run exactly. Each campaign runs in its own
// bounded process, as under the stress runner.

import { ksft_finished, ksft_print_header, ksft_print_msg, ksft_set_plan, ksft_test_result } from '../kselftest';
import { boundSeconds, missedTargets } from '../stress/cli';
import { CAMPAIGNS } from '../stress/index';
import { runCampaign } from '../stress/run-campaign';

/** The seed of every short run, so a failure here is a failure on every run. */
const SEED = 1;

async function main(): Promise<void> {
  ksft_print_header();
  ksft_set_plan(CAMPAIGNS.length);
  for (const c of CAMPAIGNS) {
    const run = await runCampaign(c, c.shortIterations, SEED, boundSeconds(c, c.shortIterations), () => undefined);
    const missed = missedTargets(run);
    for (const line of [...missed, ...run.result.examples]) ksft_print_msg(`${c.name}: ${line}`);
    const figures = Object.entries(run.result.figures).map(([k, v]) => `${k} ${v}`).join(', ');
    ksft_test_result(missed.length === 0,
      `${c.name}: ${run.result.rounds} rounds (seed ${SEED}, ${run.elapsedS.toFixed(1)} s${figures ? `; ${figures}` : ''}), every count with target 0 is 0`);
  }
  ksft_finished();
}

if (require.main === module) void main();
