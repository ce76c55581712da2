// What every fault campaign is to the stress runner (npm run stress) and to the short forms in
// selftests/kvm/fault_campaigns_test: a seeded, bounded run that reports counts, never a verdict of
// its own making. The runner compares the counts against the targets below.

/** What a campaign is given. */
export interface CampaignOptions {
  /** Rounds to run (a campaign defines what one round is: a kill, a fuzzed message, a VM cycle, ...). */
  iterations: number;
  /** Seed of every random choice, so that a failing run can be repeated exactly. */
  seed: number;
  /** Progress, one short line at a time; the runner writes it to stderr. */
  progress(line: string): void;
}

/**
 * What a campaign found. Every count is a failure count whose target is 0, except `rounds`
 * (what was done) and `figures` (measurements reported as they are, e.g. RSS, fds, kicks).
 */
export interface CampaignResult {
  rounds: number;
  /** An operation that did not finish within its time bound. */
  hangs: number;
  /** The kernel-model process died or exited while it should have been serving. */
  kernelModelExits: number;
  /** An ioctl answered with an errno outside the set the rules allow for that input. */
  undefinedErrnos: number;
  /** Writes that the device never saw, saw twice, or saw out of program order; torn values. */
  lostWrites: number;
  duplicatedWrites: number;
  reorderedWrites: number;
  /** fds of the kernel-model or processes (device tasks, QEMU, kernel-models) left behind. */
  leakedFds: number;
  leakedProcesses: number;
  /** Anything else the campaign checks, named: e.g. { rss_growth_pct: 3.1, kicks: 28000 }. */
  figures: Record<string, number>;
  /** Up to a few examples of what failed, for the report (seed and round included). */
  examples: string[];
}

export interface Campaign {
  /** The name given on the command line, e.g. 'device-kill'. */
  name: string;
  /** One line for --help and the report. */
  description: string;
  /** Iterations of the long form (the sizes the README quotes). */
  iterations: number;
  /** Iterations of the short form that fault_campaigns_test runs. */
  shortIterations: number;
  /** Seconds a round may take on a loaded machine, for the runner's time bound (default 0.1). */
  secondsPerRound?: number;
  run(options: CampaignOptions): Promise<CampaignResult>;
}

/** A result with nothing counted yet, for a campaign to fill in. */
export function emptyResult(): CampaignResult {
  return {
    rounds: 0, hangs: 0, kernelModelExits: 0, undefinedErrnos: 0, lostWrites: 0, duplicatedWrites: 0,
    reorderedWrites: 0, leakedFds: 0, leakedProcesses: 0, figures: {}, examples: [],
  };
}

/** The failure counts whose target is 0, by their report names. */
export const ZERO_TARGETS = [
  'hangs', 'kernelModelExits', 'undefinedErrnos', 'lostWrites', 'duplicatedWrites', 'reorderedWrites',
  'leakedFds', 'leakedProcesses',
] as const satisfies readonly (keyof CampaignResult)[];

/** The churn target: RSS after 1,000 VM cycles within this many percent of RSS after the first 100. */
export const RSS_GROWTH_LIMIT_PCT = 10;
