// The device-task process (dist/device-task/main.js) seen from outside, with this test playing KVM:
// exit codes for bad manifests and protocol violations, every transport and both wire layouts,
// clean exit at EOF and on the lifeline, and the mirror/rendezvous probes across real processes.

import test, { ExecutionContext } from 'ava';
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { DeviceTaskManifest, encodeManifest, MANIFEST_ENV, MANIFEST_VERSION } from '../proto/device-task-manifest';
import {
  decodeResp, encodeCmd, IOREGIONFD_CMD_READ, IOREGIONFD_CMD_WRITE, IOREGIONFD_MSG_SIZE, IoregionfdCmd, WireLayout,
} from '../proto/ioregionfd-wire';
import {
  closeQuietly, eventfd, eventfdWrite, mapShared, memfd, pipe, PollSet, POLLIN, read, socketpair, unmap, write,
} from '../proto/os';
import { fakeDeviceContext } from './sdk/conformance';
import { testdev } from './devices/testdev';
import { MIRROR_BACKLOG_OFFSET, mirrorValue } from './devices/mirror';
import { Rng } from './sdk/conformance';

const MAIN = path.join(__dirname, '..', 'dist', 'device-task', 'main.js');
const EXIT_BAD_MANIFEST = 2;
const EXIT_PROTOCOL = 3;

interface Exit {
  code: number | null;
  signal: string | null;
  stderr: string;
}

interface Task {
  child: ChildProcess;
  exit: Promise<Exit>;
}

/**
 * Spawn main.js with `manifest` (a manifest or raw env text; undefined = no env var) and `fds` at
 * 3, 4, ... Our copies of the fds in `close` (default: all of them, the child's ends) are closed once
 * the child has them. Killed at teardown if still alive.
 */
function spawnTask(t: ExecutionContext, manifest: DeviceTaskManifest | string | undefined, fds: number[] = [], close = fds): Task {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first`);
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env[MANIFEST_ENV];
  if (manifest !== undefined) env[MANIFEST_ENV] = typeof manifest === 'string' ? manifest : encodeManifest(manifest);
  const child = spawn(process.execPath, [MAIN], { stdio: ['ignore', 'ignore', 'pipe', ...fds], env });
  close.forEach(closeQuietly);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const exit = new Promise<Exit>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal, stderr }));
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, exit };
}

/** Wait for the exit, killing the task after timeoutMs (a hang is then reported as SIGKILL). */
async function exitOf(task: Task, timeoutMs = 10000): Promise<Exit> {
  const timer = setTimeout(() => task.child.kill('SIGKILL'), timeoutMs);
  const e = await task.exit;
  clearTimeout(timer);
  return e;
}

function manifest(over: Partial<DeviceTaskManifest>): DeviceTaskManifest {
  return { version: MANIFEST_VERSION, device: 'testdev', config: {}, layout: 'v3', channels: [], memory: [], eventfds: {}, ...over };
}

/** A reproducible u32 stream for command mixes and fragmentations. */
function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.u32();
}

const sleepMs = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Commands concatenated into one byte string. */
function encodeAll(layout: WireLayout, cmds: IoregionfdCmd[]): Uint8Array {
  const bytes = new Uint8Array(cmds.length * IOREGIONFD_MSG_SIZE);
  const view = new DataView(bytes.buffer);
  cmds.forEach((c, i) => encodeCmd(layout, c, view, i * IOREGIONFD_MSG_SIZE));
  return bytes;
}

/** Write all of `bytes` in random fragments of 1..100 bytes, pausing now and then so some arrive split. */
function writeFragmented(fd: number, bytes: Uint8Array, next: () => number): void {
  for (let pos = 0; pos < bytes.length;) {
    const n = Math.min(bytes.length - pos, 1 + (next() % 100));
    pos += write(fd, bytes, pos, n);
    if (next() % 16 === 0) sleepMs(1);
  }
}

/** Read exactly n bytes, or throw after timeoutMs / at EOF (never hangs the test). */
function readExactly(fd: number, n: number, timeoutMs = 5000): Uint8Array {
  const out = new Uint8Array(n);
  const poll = new PollSet(1);
  const deadline = Date.now() + timeoutMs;
  for (let got = 0; got < n;) {
    poll.set(0, fd, POLLIN);
    if (poll.wait(1, Math.max(0, deadline - Date.now())) === 0) throw new Error(`timed out with ${got} of ${n} bytes`);
    const r = read(fd, out, got, n - got);
    if (r === 0) throw new Error(`EOF after ${got} of ${n} bytes`);
    got += r;
  }
  return out;
}

/** A reproducible mix of echo-device traffic: reads, non-posted and posted writes, every size. */
function echoTraffic(count: number, next: () => number): IoregionfdCmd[] {
  const sizes = [1, 2, 4, 8];
  return Array.from({ length: count }, () => {
    const size = sizes[next() % 4];
    const isRead = next() % 2 === 0;
    const data = isRead ? 0n : ((BigInt(next()) << 32n) | BigInt(next())) & ((1n << BigInt(8 * size)) - 1n);
    return {
      cmd: isRead ? IOREGIONFD_CMD_READ : IOREGIONFD_CMD_WRITE, size, resp: isRead || next() % 3 !== 0,
      userData: BigInt(next() % 3), offset: BigInt(next() % 8), data,
    };
  });
}

/** What KVM must read back for `cmds`: one response per command with resp set, from testdev in memory. */
function expectedEcho(cmds: IoregionfdCmd[]): bigint[] {
  const oracle = testdev.create(fakeDeviceContext().ctx);
  const out: bigint[] = [];
  for (const c of cmds) {
    if (c.cmd === IOREGIONFD_CMD_READ) out.push(oracle.read(c.offset, c.size, c.userData));
    else oracle.write(c.offset, c.size, c.data, c.userData);
    if (c.resp && c.cmd === IOREGIONFD_CMD_WRITE) out.push(0n);
  }
  return out;
}

/**
 * The fds a test holds: closed exactly once, by close() or at teardown. (Tests in a file share the
 * process, so closing a number twice could close another test's fd that reused it.)
 */
function fdsOf(t: ExecutionContext): { own<T extends number[]>(...fds: T): T; close(fd: number): void } {
  const held = new Set<number>();
  const close = (fd: number) => {
    if (held.delete(fd)) closeQuietly(fd);
  };
  t.teardown(() => [...held].forEach(close));
  return {
    own: (...fds) => {
      fds.forEach((fd) => held.add(fd));
      return fds;
    },
    close,
  };
}

function responses(bytes: Uint8Array): bigint[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: bytes.length / IOREGIONFD_MSG_SIZE }, (_, i) => decodeResp(view, i * IOREGIONFD_MSG_SIZE));
}

// ---- manifest and device errors: exit 2 ----

test('a manifest with a bad field exits 2 with a message naming the field', async (t) => {
  const bad = encodeManifest(manifest({})).replace('"channels":[]', '"channels":[{"cmd_fd":3,"resp_fd":3,"transport":"carrier-pigeon"}]');
  const e = await exitOf(spawnTask(t, bad));
  t.is(e.code, EXIT_BAD_MANIFEST);
  t.regex(e.stderr, /channels\[0\]\.transport "carrier-pigeon" is unknown/);
});

test('no manifest in the environment exits 2 naming the variable', async (t) => {
  const e = await exitOf(spawnTask(t, undefined));
  t.is(e.code, EXIT_BAD_MANIFEST);
  t.regex(e.stderr, new RegExp(`${MANIFEST_ENV} is not set`));
});

// The manifest is not trusted: each of these once crashed the task (SIGBUS at the first DMA, an
// uncaught exception with exit 1, or Node aborting after one of its own fds was closed).
const memoryCases: [string, (fd: number) => DeviceTaskManifest['memory'][number], RegExp][] = [
  ['a range past the end of the memfd', (fd) => ({ fd, gpa: 0n, size: 0x2000n, offset: 0n }), /past the end of its memfd/],
  ['an unaligned offset', (fd) => ({ fd, gpa: 0n, size: 0x100n, offset: 0x10n }), /offset 0x10 is not page aligned/],
  ['size 0', (fd) => ({ fd, gpa: 0n, size: 0n, offset: 0n }), /size 0x0 is not a usable size/],
  ['size 2^64 - 1', (fd) => ({ fd, gpa: 0n, size: (1n << 64n) - 1n, offset: 0n }), /is not a usable size/],
];
for (const [what, spec, message] of memoryCases) {
  test(`guest memory with ${what} exits 2 naming the field, before any DMA`, async (t) => {
    const ram = memfd('guest-ram', 0x1000);
    const e = await exitOf(spawnTask(t, manifest({ memory: [spec(3)] }), [ram]));
    t.is(e.code, EXIT_BAD_MANIFEST, e.stderr);
    t.regex(e.stderr, message);
  });
}

test('a manifest naming an fd that was not passed (one of Node\'s own) exits 2 and closes nothing', async (t) => {
  // Only fd 3 is passed; the fds after it belong to the task's Node runtime (epoll, eventfds, pipes).
  const [ours, theirs] = socketpair('seqpacket');
  const named = manifest({ channels: [{ cmd_fd: 3, resp_fd: 3, transport: 'seqpacket' }], eventfds: { irq: 12 }, lifeline_fd: 11 });
  const e = await exitOf(spawnTask(t, named, [theirs]));
  t.is(e.code, EXIT_BAD_MANIFEST, e.stderr);
  t.regex(e.stderr, /must be 3, 4, \.\.\. with no gap .*got 3, 11, 12/);
  t.notRegex(e.stderr, /Assertion|Aborted|libuv/);
  // With no gap but more fds named than passed, the runtime's own fds there fail their kind check.
  const [ours2, theirs2] = socketpair('seqpacket');
  const e2 = await exitOf(spawnTask(t, manifest({ channels: [{ cmd_fd: 3, resp_fd: 3, transport: 'seqpacket' }], lifeline_fd: 4, memory: [{ fd: 5, gpa: 0n, size: 0x1000n, offset: 0n }] }), [theirs2]));
  t.is(e2.code, EXIT_BAD_MANIFEST, e2.stderr);
  t.regex(e2.stderr, /memory\[0\]\.fd 5 is a .*, not a memfd|lifeline_fd 4 is not an open fd/);
  [ours, ours2].forEach(closeQuietly);
});

test('fds of the wrong kind exit 2 naming the field', async (t) => {
  const efd = eventfd();
  const [a, b] = socketpair('stream');
  const e1 = await exitOf(spawnTask(t, manifest({ channels: [{ cmd_fd: 3, resp_fd: 3, transport: 'seqpacket' }] }), [efd]));
  t.is(e1.code, EXIT_BAD_MANIFEST);
  t.regex(e1.stderr, /channels\[0\]\.cmd_fd 3 is a eventfd, not a seqpacket socket/);
  const e2 = await exitOf(spawnTask(t, manifest({ eventfds: { irq: 3 } }), [b]));
  t.is(e2.code, EXIT_BAD_MANIFEST);
  t.regex(e2.stderr, /eventfds\.irq 3 is a socket, not an eventfd/);
  closeQuietly(a);
});

test('an unknown device exits 2 naming it and listing the known ones, also for an Object.prototype name', async (t) => {
  const [a, b] = await Promise.all([exitOf(spawnTask(t, manifest({ device: 'nvme9000' }))), exitOf(spawnTask(t, manifest({ device: 'constructor' })))]);
  t.is(a.code, EXIT_BAD_MANIFEST);
  t.regex(a.stderr, /unknown device 'nvme9000' \(known: .*testdev.*\)/);
  t.is(b.code, EXIT_BAD_MANIFEST);
  t.regex(b.stderr, /unknown device 'constructor'/);
});

test('a config the model rejects exits 2 naming the config field', async (t) => {
  const e = await exitOf(spawnTask(t, manifest({ device: 'doorbell', config: { mailbox: 'kitchen' } })));
  t.is(e.code, EXIT_BAD_MANIFEST);
  t.regex(e.stderr, /bad config: config\.mailbox/);
});

// ---- the data plane over each transport ----

async function echoRoundTrip(t: ExecutionContext, transport: 'stream' | 'pipe', layout: WireLayout, seed: number, pollNs?: number): Promise<void> {
  const fds = fdsOf(t);
  const next = rng(seed);
  const cmds = echoTraffic(400, next);
  const want = expectedEcho(cmds);
  let cmdFd: number;
  let respFd: number;
  let task: Task;
  if (transport === 'stream') {
    const [kvm, dev] = socketpair('stream');
    [cmdFd] = fds.own(kvm);
    respFd = kvm;
    task = spawnTask(t, manifest({ layout, channels: [{ cmd_fd: 3, resp_fd: 3, transport }], poll_ns: pollNs }), [dev]);
  } else {
    const [cmdRead, cmdWrite] = pipe();
    const [respRead, respWrite] = pipe();
    [cmdFd, respFd] = fds.own(cmdWrite, respRead);
    task = spawnTask(t, manifest({ layout, channels: [{ cmd_fd: 3, resp_fd: 4, transport }] }), [cmdRead, respWrite]);
  }
  writeFragmented(cmdFd, encodeAll(layout, cmds), next);
  const got = responses(readExactly(respFd, want.length * IOREGIONFD_MSG_SIZE));
  t.is(got.length, want.length);
  const firstBad = got.findIndex((v, i) => v !== want[i]);
  t.is(firstBad, -1, firstBad < 0 ? '' : `response ${firstBad}: 0x${got[firstBad].toString(16)}, want 0x${want[firstBad].toString(16)}`);
  fds.close(cmdFd);
  fds.close(respFd);
  const e = await exitOf(task);
  t.is(e.code, 0, e.stderr);
}

test('over SOCK_STREAM, 400 commands split into random fragments and coalesced are all answered correctly', (t) =>
  echoRoundTrip(t, 'stream', 'v3', 7));

test("over the 'pipe' transport (separate command and response pipes) every command is answered correctly", (t) =>
  echoRoundTrip(t, 'pipe', 'v3', 11));

test('with layout "v1" in the manifest the task speaks the v1/v2 info-word layout', (t) => echoRoundTrip(t, 'stream', 'v1', 13));

test('with poll_ns 0 (blocking reads only) every command over SOCK_STREAM is answered correctly', (t) =>
  echoRoundTrip(t, 'stream', 'v3', 17, 0));

for (const pollNs of [undefined, 0]) {
  test(`over SEQPACKET, answers come one per message; EOF on the channel exits 0 (poll_ns ${pollNs ?? 'default'})`, async (t) => {
    const fds = fdsOf(t);
    const [kvm, dev] = socketpair('seqpacket');
    fds.own(kvm);
    const task = spawnTask(t, manifest({ channels: [{ cmd_fd: 3, resp_fd: 3, transport: 'seqpacket' }], poll_ns: pollNs }), [dev]);
    const cmds = echoTraffic(50, rng(3));
    const bytes = encodeAll('v3', cmds);
    const got: bigint[] = [];
    for (let i = 0; i < cmds.length; i++) {
      write(kvm, bytes, i * IOREGIONFD_MSG_SIZE, IOREGIONFD_MSG_SIZE);
      if (cmds[i].resp) got.push(...responses(readExactly(kvm, IOREGIONFD_MSG_SIZE)));
    }
    t.deepEqual(got, expectedEcho(cmds));
    fds.close(kvm);
    const e = await exitOf(task);
    t.is(e.code, 0, e.stderr);
  });
}

// ---- protocol violations: exit 3 with a log line ----

test('over SEQPACKET a 16-byte message is a protocol violation: a log line and exit 3', async (t) => {
  const fds = fdsOf(t);
  const [kvm, dev] = socketpair('seqpacket');
  fds.own(kvm);
  const task = spawnTask(t, manifest({ channels: [{ cmd_fd: 3, resp_fd: 3, transport: 'seqpacket' }] }), [dev]);
  write(kvm, new Uint8Array(16));
  const e = await exitOf(task);
  t.is(e.code, EXIT_PROTOCOL);
  t.regex(e.stderr, /protocol violation on channel 0: a 16-byte message where a 32-byte command belongs/);
});

test('an unknown cmd value is a protocol violation: a log line and exit 3', async (t) => {
  const fds = fdsOf(t);
  const [kvm, dev] = socketpair('stream');
  fds.own(kvm);
  const task = spawnTask(t, manifest({ channels: [{ cmd_fd: 3, resp_fd: 3, transport: 'stream' }] }), [dev]);
  const frame = encodeAll('v3', [{ cmd: IOREGIONFD_CMD_READ, size: 4, resp: true, userData: 0n, offset: 0n, data: 0n }]);
  frame[0] = 7;
  write(kvm, frame);
  const e = await exitOf(task);
  t.is(e.code, EXIT_PROTOCOL);
  t.regex(e.stderr, /protocol violation on channel 0: .*unknown cmd 7/);
});

// ---- a task without channels ----

test('a doorbell-only task (no channels) serves rings and exits 0 when its lifeline closes', async (t) => {
  const fds = fdsOf(t);
  const [doorbellFd, irqFd, ram] = fds.own(eventfd(), eventfd(), memfd('guest-ram', 0x1000));
  const mapping = mapShared(ram, 0x1000);
  t.teardown(() => unmap(mapping));
  const [lifeline, lifelineChild] = socketpair('stream');
  fds.own(lifeline);
  const mem = new DataView(mapping.buffer);
  mem.setBigUint64(0x100, 41n, true);
  // The task gets its own copies of the eventfds and the memfd; we keep ours to ring and to look.
  const task = spawnTask(t, manifest({
    device: 'doorbell', config: { mailbox: '0x100' }, eventfds: { doorbell: 3, irq: 4 },
    memory: [{ fd: 5, gpa: 0n, size: 0x1000n, offset: 0n }], lifeline_fd: 6,
  }), [doorbellFd, irqFd, ram, lifelineChild], [lifelineChild]);
  eventfdWrite(doorbellFd, 1n);
  const irq = new PollSet(1);
  irq.set(0, irqFd, POLLIN);
  t.is(irq.wait(1, 5000), 1, 'the device raised irq');
  t.is(mem.getBigUint64(0x108, true), 42n, 'request + 1 in the mailbox');
  t.is(mem.getBigUint64(0x110, true), 1n, 'one ring');
  t.is(task.child.exitCode, null, 'still running while the lifeline is open');
  fds.close(lifeline);
  const e = await exitOf(task);
  t.is(e.code, 0, e.stderr);
});

// ---- the probe devices across processes ----

const readCmd = (offset: bigint, userData: bigint, size = 8): IoregionfdCmd =>
  ({ cmd: IOREGIONFD_CMD_READ, size, resp: true, userData, offset, data: 0n });

/** One command, answered before the next is sent. */
function readOne(fd: number, c: IoregionfdCmd): bigint {
  write(fd, encodeAll('v3', [c]));
  return responses(readExactly(fd, IOREGIONFD_MSG_SIZE))[0];
}

for (const transport of ['seqpacket', 'stream'] as const) {
  test(`mirror over ${transport}: answers match their requests; commands queued behind an unanswered one are counted at 0xfff8`, async (t) => {
    const fds = fdsOf(t);
    const [kvm, dev] = socketpair(transport);
    fds.own(kvm);
    // Queued before the task starts, so it finds them all waiting: deterministic, no race.
    const queued = [readCmd(0x10n, 1n), readCmd(0x18n, 2n, 4), readCmd(0x20n, 3n, 2)];
    const bytes = encodeAll('v3', queued);
    if (transport === 'seqpacket') queued.forEach((_, i) => write(kvm, bytes, i * IOREGIONFD_MSG_SIZE, IOREGIONFD_MSG_SIZE));
    else write(kvm, bytes);
    const task = spawnTask(t, manifest({ device: 'mirror', channels: [{ cmd_fd: 3, resp_fd: 3, transport }] }), [dev]);
    t.deepEqual(responses(readExactly(kvm, queued.length * IOREGIONFD_MSG_SIZE)), queued.map((c) => mirrorValue(c.offset, c.size, c.userData)));
    for (let i = 0; i < 5; i++) t.is(readOne(kvm, readCmd(BigInt(8 * i), 9n)), mirrorValue(BigInt(8 * i), 8, 9n));
    t.is(readOne(kvm, readCmd(MIRROR_BACKLOG_OFFSET, 0n)), 2n,
      'the first two queued reads each had another behind them; the one-at-a-time reads had none');
    fds.close(kvm);
    t.is((await exitOf(task)).code, 0);
  });
}

test('two rendezvous tasks with crossed eventfds both answer 1 when their reads overlap; a lone one answers 0 after its timeout', async (t) => {
  const fds = fdsOf(t);
  const [aToB, bToA, nobody, unheard] = fds.own(eventfd(), eventfd(), eventfd(), eventfd());
  const start = (out: number, input: number, timeout_ms: number) => {
    const [kvm, dev] = socketpair('seqpacket');
    fds.own(kvm);
    const task = spawnTask(t, manifest({
      device: 'rendezvous', config: { timeout_ms }, channels: [{ cmd_fd: 3, resp_fd: 3, transport: 'seqpacket' }], eventfds: { out: 4, in: 5 },
    }), [dev, out, input], [dev]);
    return { kvm, task };
  };
  const a = start(aToB, bToA, 5000);
  const b = start(bToA, aToB, 5000);
  const lone = start(unheard, nobody, 100);
  const read = encodeAll('v3', [readCmd(0n, 0n)]);
  write(a.kvm, read);
  write(b.kvm, read);
  t.deepEqual([responses(readExactly(a.kvm, 32))[0], responses(readExactly(b.kvm, 32))[0]], [1n, 1n]);
  const t0 = Date.now();
  t.is(readOne(lone.kvm, readCmd(0n, 0n)), 0n);
  t.true(Date.now() - t0 >= 90, `a lone read waited ${Date.now() - t0} ms for its partner`);
  for (const x of [a, b, lone]) fds.close(x.kvm);
  const exits = await Promise.all([a, b, lone].map((x) => exitOf(x.task)));
  t.deepEqual(exits.map((e) => e.code), [0, 0, 0]);
});
