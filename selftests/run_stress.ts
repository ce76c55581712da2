// The stress runner (`npm run stress -- NAME|all`): runs fault campaigns, each in its own bounded
// process, with progress on stderr, the figures against their targets on stdout, and JSON on request.
// Exit 0 when every target is met, 1 when one is missed, 2 for a bad command line.

import * as fs from 'node:fs';
import { writeFdSync } from './kselftest';
import { UsageError } from './run_kselftest';
import { boundSeconds, CampaignRun, EXIT_USAGE, exitStatus, formatTable, iterationsOf, missedTargets, parseStressArgs, resultsJson, StressOptions, usage } from './stress/cli';
import { CAMPAIGNS } from './stress/index';
import { runCampaign } from './stress/run-campaign';

async function main(argv: readonly string[]): Promise<number> {
  let o: StressOptions;
  try {
    o = parseStressArgs(argv, CAMPAIGNS);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    writeFdSync(2, `run_stress: ${e.message}\n${usage(CAMPAIGNS)}`);
    return EXIT_USAGE;
  }
  if (o.help) {
    writeFdSync(1, usage(CAMPAIGNS));
    return 0;
  }
  const started = new Date();
  const seed = o.seed ?? (Date.now() % 1_000_000_007);
  const runs: CampaignRun[] = [];
  for (const c of o.campaigns) {
    const iterations = iterationsOf(c, o);
    const boundS = o.timeoutS ?? boundSeconds(c, iterations);
    writeFdSync(2, `# ${c.name}: ${iterations} rounds, seed ${seed}, bound ${boundS} s\n`);
    const run = await runCampaign(c, iterations, seed, boundS, (line) => writeFdSync(2, `# ${c.name}: ${line}\n`));
    const missed = missedTargets(run);
    writeFdSync(2, `# ${c.name}: ${run.result.rounds} rounds in ${run.elapsedS.toFixed(1)} s, ${missed.length ? `missed: ${missed.join('; ')}` : 'every target met'}\n`);
    for (const ex of run.result.examples) writeFdSync(2, `#   example: ${ex}\n`);
    runs.push(run);
  }
  writeFdSync(1, `${formatTable(runs)}\n`);
  if (o.json !== undefined) {
    fs.writeFileSync(o.json, `${JSON.stringify(resultsJson(runs, started), null, 2)}\n`);
    writeFdSync(2, `# wrote ${o.json}\n`);
  }
  return exitStatus(runs);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: Error) => {
    writeFdSync(2, `run_stress: ${e.stack ?? e}\n`);
    process.exit(1);
  },
);
