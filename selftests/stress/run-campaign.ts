// Runs one campaign in a child process of its own, bounded in time: a campaign that throws, crashes
// or wedges (most of the library blocks in system calls, so a timer in the same process could never
// fire) becomes a failed run with a reason, never a hung runner. The child reports on fd 3, one JSON
// object per line: {progress} lines, then {result} or {error}.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import { dieWithParent } from '../../proto/os';
import { killGroup } from '../run_kselftest';
import { Campaign, CampaignResult, emptyResult } from './campaign';
import { CampaignRun } from './cli';
import { CAMPAIGNS } from './index';

/** Longest silence before the parent says the campaign is still running. */
const HEARTBEAT_MS = 5000;
const REPORT_FD = 3;

interface Report {
  progress?: string;
  result?: CampaignResult;
  error?: string;
}

/**
 * Run `campaign` in a child process (its own process group, killed whole when done), passing
 * progress lines to `progress`. After `boundS` seconds the group is killed and the run counts a hang.
 */
export function runCampaign(campaign: Campaign, iterations: number, seed: number, boundS: number, progress: (line: string) => void): Promise<CampaignRun> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--enable-source-maps', __filename, campaign.name, String(iterations), String(seed)], {
      // The child's stdout goes to our stderr: stdout is for the figures (or KTAP) only.
      stdio: ['ignore', 2, 2, 'pipe'],
      detached: true,
    });
    let result: CampaignResult | undefined;
    let error: string | undefined;
    let lastProgress = Date.now();
    let lastLine = 'starting';
    const decoder = new StringDecoder('utf8');
    let partial = '';
    const onLine = (line: string): void => {
      let r: Report;
      try {
        r = JSON.parse(line) as Report;
      } catch {
        return;
      }
      if (r.progress !== undefined) {
        lastProgress = Date.now();
        lastLine = r.progress;
        progress(r.progress);
      }
      if (r.result) result = r.result;
      if (r.error !== undefined) error = r.error;
    };
    const channel = child.stdio[REPORT_FD] as NodeJS.ReadableStream | null;
    channel?.on('data', (chunk: Buffer) => {
      const lines = (partial + decoder.write(chunk)).split('\n');
      partial = lines.pop() ?? '';
      lines.forEach(onLine);
    });
    channel?.on('error', () => undefined);
    const heartbeat = setInterval(() => {
      if (Date.now() - lastProgress < HEARTBEAT_MS) return;
      lastProgress = Date.now();
      progress(`still running after ${((Date.now() - started) / 1000).toFixed(0)} s (last: ${lastLine})`);
    }, 1000);
    let timedOut = false;
    const bound = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
    }, boundS * 1000);
    let done = false;
    const finish = (how: string): void => {
      if (done) return;
      done = true;
      clearInterval(heartbeat);
      clearTimeout(bound);
      if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
      const elapsedS = (Date.now() - started) / 1000;
      const run: CampaignRun = { name: campaign.name, iterations, seed, elapsedS, result: result ?? emptyResult() };
      if (timedOut) {
        run.result = { ...run.result, hangs: run.result.hangs + 1, examples: [...run.result.examples, `the campaign did not finish within ${boundS} s (last progress: ${lastLine})`] };
        run.error = `no result within ${boundS} s`;
      } else if (error !== undefined) {
        run.error = error;
      } else if (!result) {
        run.error = `the campaign process ${how} without a result`;
      }
      resolve(run);
    };
    child.on('error', (e) => {
      error = `cannot start the campaign process: ${e.message}`;
      finish('failed');
    });
    // 'close' comes once the report pipe is drained, so a result written just before exit is seen.
    child.on('close', (code, signal) => finish(signal ? `was killed by ${signal}` : `exited with ${code}`));
  });
}

function report(r: Report): void {
  fs.writeSync(REPORT_FD, `${JSON.stringify(r)}\n`);
}

/** The child: find the campaign, run it, report, exit (any kernel-model it left dies with it). */
async function child(argv: string[]): Promise<never> {
  // Its own process group keeps the runner's Ctrl-C from reaching it: die with the runner instead.
  dieWithParent();
  const [name, iterations, seed] = argv;
  const campaign = CAMPAIGNS.find((c) => c.name === name);
  try {
    if (!campaign) throw new Error(`no campaign named '${name}'`);
    const result = await campaign.run({ iterations: Number(iterations), seed: Number(seed), progress: (line) => report({ progress: line }) });
    report({ result });
  } catch (e) {
    report({ error: (e as Error)?.stack ?? String(e) });
  }
  process.exit(0);
}

if (require.main === module) void child(process.argv.slice(2));
