// The transport floors as perf cases: two processes over one AF_UNIX SOCK_SEQPACKET socketpair, one
// blocking read(2)/write(2) per 32-byte message, with no KVM model in between. What ioregionfd costs
// is judged against these.
//
//   node: this process (koffi read/write, main thread) <-> perf/node_echo_peer (the same I/O style
//         as the model's device tasks)
//   C:    perf/transport_floor.c, built here with `cc -O2` into a temp dir, parent <-> forked child;
//         it runs one round per command line on its stdin, so its rounds interleave with the others

import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { closeQuietly, pipe, readRaw, socketpair, writeRaw } from '../../../proto/os';
import { ksft_print_msg } from '../../kselftest';
import { now_ns, PerfCase, PerfOptions, perf_ops } from './perf';
import { TEST_ASSERT, TEST_FAIL } from './test_util';
import { CMD_FENCE, CMD_QUIT, CMD_READ, CMD_WRITE, FLOOR_MSG } from '../perf/floor_protocol';

/** The C source lives beside the TypeScript sources (tsc does not copy it to dist/). */
const C_SOURCE = path.resolve(__dirname, '..', '..', '..', '..', 'selftests', 'kvm', 'perf', 'transport_floor.c');
const NODE_PEER = path.join(__dirname, '..', 'perf', 'node_echo_peer.js');

export const FLOOR_RTT_OPS = 20000;
export const FLOOR_POSTED_OPS = 100000;

function exitOf(child: ReturnType<typeof spawn>): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });
}

/** floor_node_rtt / floor_node_posted_rate: rounds timed in this thread around blocking koffi read/write. */
export function node_floor_case(o: PerfOptions, name: string, posted: boolean): PerfCase {
  const ops = perf_ops(o, posted ? FLOOR_POSTED_OPS : FLOOR_RTT_OPS);
  const [fd, theirs] = socketpair('seqpacket');
  const child = spawn(process.execPath, [NODE_PEER], { stdio: ['ignore', 'inherit', 'inherit', theirs] });
  closeQuietly(theirs);
  const exited = exitOf(child);
  const msg = new Uint8Array(FLOOR_MSG);
  const view = new DataView(msg.buffer);

  const rtt = (n: number): void => {
    msg[0] = CMD_READ;
    for (let i = 0; i < n; i++) {
      view.setBigUint64(8, BigInt(i), true);
      if (writeRaw(fd, msg, FLOOR_MSG) !== FLOOR_MSG) TEST_FAIL(`${name}: write failed`);
      if (readRaw(fd, msg, FLOOR_MSG) !== FLOOR_MSG) TEST_FAIL(`${name}: short or failed read`);
      if (view.getBigUint64(16, true) !== BigInt(i + 1)) TEST_FAIL(`${name}: wrong answer to request ${i}`);
    }
  };
  const oneWay = (n: number): void => {
    msg[0] = CMD_WRITE;
    for (let i = 0; i < n; i++) {
      view.setBigUint64(8, BigInt(i), true);
      if (writeRaw(fd, msg, FLOOR_MSG) !== FLOOR_MSG) TEST_FAIL(`${name}: write failed`);
    }
    msg[0] = CMD_FENCE;
    if (writeRaw(fd, msg, FLOOR_MSG) !== FLOOR_MSG || readRaw(fd, msg, FLOOR_MSG) !== FLOOR_MSG) TEST_FAIL(`${name}: fence failed`);
    const counted = view.getBigUint64(16, true);
    if (counted !== BigInt(n)) TEST_FAIL(`${name}: the peer counted ${counted} of ${n} writes`);
  };
  return {
    name, unit: posted ? 'ops/s' : 'us', timing: 'this process (hrtime around each round, main thread)',
    note: `Node <-> Node, SOCK_SEQPACKET, blocking koffi read/write${posted ? ', closed by a fence' : ''}`,
    round(r) {
      const n = r === 0 ? Math.max(1, Math.round(ops / 10)) : ops;
      const t0 = now_ns();
      (posted ? oneWay : rtt)(n);
      return { ops: n, ns: Number(now_ns() - t0) };
    },
    async finish() {
      msg[0] = CMD_QUIT;
      writeRaw(fd, msg, FLOOR_MSG);
      closeQuietly(fd);
      const code = await exited;
      TEST_ASSERT(code === 0, `${name}: the Node peer exited with ${code}`);
    },
  };
}

/** A built transport_floor, shared by the C cases of a program; dispose() removes the temp dir. */
export interface CFloorProgram {
  exe: string;
  dispose(): void;
}

/** Build transport_floor.c with `cc -O2` (or $CC) into a fresh temp dir, or say why not. */
export function build_c_floor(): CFloorProgram | string {
  const cc = process.env.CC ?? 'cc';
  if (!fs.existsSync(C_SOURCE)) return `C source ${C_SOURCE} not found`;
  const probe = spawnSync(cc, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) return `no C compiler ('${cc}' not runnable)`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ioregionfd-bench-'));
  const dispose = () => fs.rmSync(dir, { recursive: true, force: true });
  const exe = path.join(dir, 'transport_floor');
  const build = spawnSync(cc, ['-O2', '-o', exe, C_SOURCE], { encoding: 'utf8' });
  if (build.status !== 0) {
    dispose();
    return `'${cc} -O2' failed: ${(build.stderr || build.error?.message || '').trim().split('\n')[0]}`;
  }
  ksft_print_msg(`built perf/transport_floor.c with ${probe.stdout.split('\n')[0]}`);
  return { exe, dispose };
}

/** How a C floor runs: both ends on one CPU, and/or spinning before each blocking read. */
export interface CFloorMode {
  cpu?: number;
  pollNs?: number;
}

/**
 * floor_c_rtt / floor_c_posted_rate: one transport_floor process pair; it times each round itself.
 * With `cpu`, both ends run on that CPU (floor_c_rtt_placed); with `pollNs`, both spin that long for
 * each message before blocking (floor_c_rtt_polled).
 */
export function c_floor_case(o: PerfOptions, prog: CFloorProgram, name: string, posted: boolean, mode: CFloorMode = {}): PerfCase {
  const { cpu, pollNs } = mode;
  const ops = perf_ops(o, posted ? FLOOR_POSTED_OPS : FLOOR_RTT_OPS);
  // Plain pipes for its stdin/stdout, used synchronously: a round is a blocking request and answer.
  const [cmdRead, cmdWrite] = pipe();
  const [outRead, outWrite] = pipe();
  const args = [...(cpu === undefined ? [] : [`cpu=${cpu}`]), ...(pollNs ? [`poll=${pollNs}`] : [])];
  const child = spawn(prog.exe, args, { stdio: [cmdRead, outWrite, 'inherit'] });
  closeQuietly(cmdRead);
  closeQuietly(outWrite);
  const exited = exitOf(child);
  const buf = new Uint8Array(256);
  let pending = '';

  const request = (line: string): string => {
    const bytes = Buffer.from(`${line}\n`);
    if (writeRaw(cmdWrite, bytes) !== bytes.length) TEST_FAIL(`${name}: transport_floor is gone`);
    while (!pending.includes('\n')) {
      const n = readRaw(outRead, buf);
      if (n <= 0) TEST_FAIL(`${name}: transport_floor exited (read ${n})`);
      pending += Buffer.from(buf.subarray(0, n)).toString('utf8');
    }
    const nl = pending.indexOf('\n');
    const answer = pending.slice(0, nl);
    pending = pending.slice(nl + 1);
    return answer;
  };
  return {
    name, unit: posted ? 'ops/s' : 'us', timing: 'the C program (clock_gettime around each round)',
    note: `C <-> C (fork), SOCK_SEQPACKET, ${pollNs ? `recv(MSG_DONTWAIT) spun up to ${pollNs / 1000} us, then ` : ''}blocking read/write` +
      `${posted ? ', closed by a fence' : ''}${cpu === undefined ? '' : `, both on CPU ${cpu}`}`,
    round(r) {
      const n = r === 0 ? Math.max(1, Math.round(ops / 10)) : ops;
      const answer = request(`${posted ? 'posted' : 'rtt'} ${n}`);
      const m = /^ok (\d+) (\d+)$/.exec(answer);
      if (!m) TEST_FAIL(`${name}: transport_floor answered '${answer}'`);
      return { ops: Number(m[1]), ns: Number(m[2]) };
    },
    async finish() {
      writeRaw(cmdWrite, Buffer.from('quit\n'));
      closeQuietly(cmdWrite);
      const code = await exited;
      closeQuietly(outRead);
      TEST_ASSERT(code === 0, `${name}: transport_floor exited with ${code}${pending ? `: ${pending.trim()}` : ''}`);
    },
  };
}
