// device_isolation_test: a device task reaches what its manifest names and nothing else of another
// process of the same user: not its kernel-model's fds or memory map (the guest RAM of every VM), not
// another device task's. Both are non-dumpable, which closes /proc/<pid>/fd, maps and mem to other
// processes of their user. (Root, or a user with CAP_SYS_PTRACE, can still reach everything: see the
// README's trust model.) Run as root, the probe runs as `nobody` from a copy of the build it can read.

import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { EXPECT_EQ, FIXTURE, TEST_F, test_harness_run } from '../kselftest_harness';
import { __TEST_REQUIRE } from './lib/test_util';

const REPO = path.resolve(__dirname, '..', '..', '..');
const NOBODY = 65534;
/** What the build needs at run time (package.json dependencies and theirs). */
const RUNTIME_PACKAGES = ['koffi', 'protobufjs', 'long', '@koromix'];

/** A world-readable copy of dist/ and the runtime packages, for a probe that runs as another user. */
function readableCopy(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'device_isolation_test-'));
  fs.chmodSync(dir, 0o755);
  fs.cpSync(path.join(REPO, 'dist'), path.join(dir, 'dist'), { recursive: true });
  for (const p of RUNTIME_PACKAGES) {
    const from = path.join(REPO, 'node_modules', p);
    if (fs.existsSync(from)) fs.cpSync(from, path.join(dir, 'node_modules', p), { recursive: true });
  }
  return dir;
}

const root = process.getuid?.() === 0;
const user = root ? 'nobody' : os.userInfo().username;

/** What the probe (a device task's view) could reach: key -> 'open' | 'denied' | an error. */
const probed = FIXTURE('probe', (): Map<string, string> => {
  let copy: string | undefined;
  if (root) copy = readableCopy();
  const base = copy ?? REPO;
  const probe = path.join(base, 'dist', 'selftests', 'kvm', 'fixtures', 'isolation_probe.js');
  const r = spawnSync(process.execPath, [probe], {
    encoding: 'utf8', timeout: 30000, cwd: base, ...(root ? { uid: NOBODY, gid: NOBODY } : {}),
  });
  if (copy) fs.rmSync(copy, { recursive: true, force: true });
  __TEST_REQUIRE(r.status === 0, `the probe could not run as ${user} (exit ${r.status ?? r.signal}): ${r.stderr.trim().split('\n').pop()}`);
  return new Map(r.stdout.trim().split('\n').map((l) => l.split(':') as [string, string]));
});

for (const [key, expected, name] of [
  ['own-fd', 'open', `as ${user}, a device task reads its own /proc/self/fd (the probe works)`],
  ['kernel-model-fd', 'denied', 'it cannot list its kernel-model\'s fds (/proc/<pid>/fd)'],
  ['kernel-model-maps', 'denied', 'it cannot read its kernel-model\'s memory map'],
  ['other-device-fd', 'denied', 'it cannot list another device task\'s fds'],
] as const) {
  TEST_F(probed, name, (seen) => void EXPECT_EQ(seen.get(key) ?? 'nothing', expected, key));
}

if (require.main === module) void test_harness_run();
