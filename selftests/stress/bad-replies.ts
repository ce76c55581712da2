// bad-replies: a device (played by the campaign, which holds the device end of the region's fds)
// answers a guest's read or synchronous write with garbage, too few bytes, too many, late, to a
// posted write that wants no answer, or not at all (it closes, or stays silent until the VMM kicks
// the vCPU, which then resumes it after an answer, a close, a deassign, or destroys the VM).
//
// Every case has one defined outcome (docs/ioregionfd.md §4.4-§4.8, §5.4-§5.6; proven one by one in
// ioregionfd_failure_test, ioregionfd_signal_test, ioregionfd_wire_test):
// - garbage: the padding is ignored, a read completes with the low `size` bytes of `data`;
// - short or long on SEQPACKET: EIO, the failure exit (or the ordinary exit without the capability);
// - short on a stream or pipe: KVM waits for the rest (then completes), or EIO at EOF;
// - long on a stream or pipe: the first 32 bytes answer this access, the rest starts the next answer;
// - late: the vCPU just waits (there are no timeouts), then completes;
// - a reply to a posted write: taken as the answer of the next access that wants one (§4.6);
// - no reply and the device closes: EIO;
// - no reply and a kick: KVM_RUN -1/EINTR with KVM_EXIT_INTR, and the next KVM_RUN resumes the
//   access: it completes with a late answer, fails with EIO after a close, becomes the ordinary
//   exit after a deassign (never the failure exit), or the VM is destroyed with it pending.
// Anything else is counted as an undefined outcome, a KVM_RUN that does not come back as a hang.

import { Campaign, CampaignResult } from './campaign';
import { example, KernelModel, runRounds, waitRun } from './data-path';
import {
  BR_PIO, BR_POSTED_FIRST, BR_POSTED_OFFSET, BR_RESULTS, BR_WRITE, bad_replies_guest,
} from './guest-code';
import { Rng } from '../../device-task/sdk/conformance';
import { EINTR, EIO, errnoName } from '../../proto/errno';
import { decodeCmd, IOREGIONFD_MSG_SIZE, IoregionfdCmd, sizeMask } from '../../proto/ioregionfd-wire';
import {
  KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT, KVM_EXIT_INTR, KVM_IOREGION_PIO, KVM_IOREGION_POSTED_WRITES, PAGE_SIZE, RUN,
} from '../../proto/kvm-uapi';
import { closeQuietly, pipe, PollSet, POLLIN, readRaw, socketpair, writeRaw } from '../../proto/os';
import { Transport, Vcpu, Vm } from '../../vmm';
import { le_store, le_value } from '../kvm/lib/kvm_util';

const MMIO_BASE = 0xd0000000n;
const PIO_BASE = 0x6000n;
/** Bound on each wait: a command to arrive, KVM_RUN to return. */
const STEP_MS = 5000;
/** What the VMM completes a failed read with. */
const VMM_VALUE = 0x5a5a_5a5a_5a5a_5a5an;
const TRANSPORTS: Transport[] = ['seqpacket', 'stream', 'pipe'];

const CASES = [
  'garbage', 'short', 'long', 'late', 'posted-reply', 'close', 'kick-answer', 'kick-close', 'kick-deassign', 'kick-destroy',
] as const;
type Case = typeof CASES[number];

interface Round {
  kase: Case;
  transport: Transport;
  pio: boolean;
  write: boolean;
  size: 1 | 2 | 4 | 8;
  failureExit: boolean;
  /** Bytes of the bad answer: short 1..31, long 33..64. */
  length: number;
  delayMs: number;
  value: bigint;
  frames: Uint8Array[];
}

function chooseRound(rng: Rng): Round {
  const kase = CASES[rng.below(CASES.length)];
  const pio = rng.below(2) === 1;
  const sizes = pio ? [1, 2, 4] as const : [1, 2, 4, 8] as const;
  const frames = [0, 1].map(() => Uint8Array.from({ length: IOREGIONFD_MSG_SIZE }, () => rng.below(256)));
  const short = kase === 'short';
  return {
    kase, transport: TRANSPORTS[rng.below(TRANSPORTS.length)], pio,
    // A reply to a posted write is checked through the read that takes it.
    write: kase !== 'posted-reply' && rng.below(2) === 1, size: sizes[rng.below(sizes.length)], failureExit: rng.below(2) === 1,
    length: short ? 1 + rng.below(IOREGIONFD_MSG_SIZE - 1) : IOREGIONFD_MSG_SIZE + 1 + rng.below(IOREGIONFD_MSG_SIZE),
    delayMs: rng.below(50), value: rng.u64(), frames,
  };
}

function describe(r: Round): string {
  return `${r.kase} ${r.transport} ${r.pio ? 'PIO' : 'MMIO'} ${r.write ? 'write' : 'read'} size ${r.size}` +
    `${r.kase === 'short' || r.kase === 'long' ? ` ${r.length} bytes` : ''}${r.failureExit ? ' failure-exit' : ''}`;
}

/** What the guest's access(es) must come to. */
type Expect =
  | { kind: 'complete'; reads: bigint[] }
  | { kind: 'fail'; errno: number }
  | { kind: 'ordinary' };

class Problem extends Error {}
class Hang extends Error {}

/** The VM, its one vCPU, and the device ends of the region's fds. */
class Rig {
  readonly vm: Vm;
  readonly vcpu: Vcpu;
  readonly base: bigint;
  devCmd = -1;
  devResp = -1;
  private readonly poll = new PollSet(2);

  constructor(vm: Vm, readonly r: Round, count: number) {
    this.vm = vm;
    this.base = r.pio ? PIO_BASE : MMIO_BASE;
    vm.addMemory(0, 0n, 2 * PAGE_SIZE);
    if (r.failureExit) vm.enableCap(KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT, [1n]);
    this.vcpu = vm.createVcpu(0);
    this.vcpu.setEntry(bad_replies_guest);
    const flags = (r.pio ? BR_PIO : 0n) | (r.write ? BR_WRITE : 0n) | (r.kase === 'posted-reply' ? BR_POSTED_FIRST : 0n) | (BigInt(r.size) << 8n);
    this.vcpu.setArgs(this.base, flags, r.value, count);
    let kvmFds: number[];
    if (r.transport === 'pipe') {
      const [cmdRead, cmdWrite] = pipe();
      const [respRead, respWrite] = pipe();
      [this.devCmd, this.devResp] = [cmdRead, respWrite];
      kvmFds = [respRead, cmdWrite];
    } else {
      const [kvmEnd, dev] = socketpair(r.transport);
      this.devCmd = this.devResp = dev;
      kvmFds = [kvmEnd, kvmEnd];
    }
    const bus = r.pio ? KVM_IOREGION_PIO : 0;
    try {
      vm.setIoregion({ guest_paddr: this.base, memory_size: 8n, read_fd: kvmFds[0], write_fd: kvmFds[1], flags: bus });
      if (r.kase === 'posted-reply') {
        vm.setIoregion({
          guest_paddr: this.base + BR_POSTED_OFFSET, memory_size: 8n, read_fd: kvmFds[0], write_fd: kvmFds[1], flags: bus | KVM_IOREGION_POSTED_WRITES,
        });
      }
    } finally {
      // The regions hold their own references: the kernel-model alone keeps KVM's ends open.
      new Set(kvmFds).forEach(closeQuietly);
    }
  }

  /** The next command, or a Problem if KVM_RUN returned instead, a Hang if nothing came. */
  command(): IoregionfdCmd {
    this.poll.set(0, this.devCmd, POLLIN);
    this.poll.set(1, this.vcpu.fd, POLLIN);
    if (this.poll.wait(2, STEP_MS) === 0) throw new Hang('no command arrived');
    if (!(this.poll.revents(0) & POLLIN)) throw new Problem(`KVM_RUN returned before the command came (${this.exitText()})`);
    const frame = new Uint8Array(IOREGIONFD_MSG_SIZE);
    for (let got = 0; got < IOREGIONFD_MSG_SIZE;) {
      const n = readRaw(this.devCmd, frame.subarray(got), IOREGIONFD_MSG_SIZE - got);
      if (n <= 0) throw new Problem(`the command channel ended (${n})`);
      got += n;
    }
    return decodeCmd('v3', new DataView(frame.buffer));
  }

  send(bytes: Uint8Array): void {
    for (let sent = 0; sent < bytes.length;) {
      const n = writeRaw(this.devResp, bytes.subarray(sent), bytes.length - sent, this.r.transport !== 'pipe');
      if (n <= 0) throw new Problem(`the device could not answer (${n})`);
      sent += n;
    }
  }

  closeDevice(): void {
    closeQuietly(this.devCmd);
    if (this.devResp !== this.devCmd) closeQuietly(this.devResp);
    this.devCmd = this.devResp = -1;
  }

  /** True if KVM_RUN has answered, waiting up to ms. */
  returned(ms: number): boolean {
    this.poll.set(0, this.vcpu.fd, POLLIN);
    return this.poll.wait(1, ms) > 0;
  }

  private exitText(): string {
    const res = this.vcpu.runWait();
    return res.ret < 0 ? `ret -1 ${errnoName(res.errno)}` : `exit ${this.vcpu.exit().reason}`;
  }

  /** Wait for the running KVM_RUN and check it against `expect`, completing failed accesses, to the guest's end. */
  finish(expect: Expect): void {
    const ended: string[] = [];
    for (;;) {
      const res = waitRun(this.vcpu, STEP_MS);
      if (!res) throw new Hang('KVM_RUN did not return');
      if (res.ret < 0) throw new Problem(`KVM_RUN failed with ${errnoName(res.errno)}`);
      const e = this.vcpu.exit();
      if (e.reason === 'shutdown') break;
      if (e.reason === 'ioregionfd_failure' && e.addr === this.base) {
        ended.push(`failure ${errnoName(e.errno)}`);
        if (!e.isWrite) le_store(e.data, e.len, VMM_VALUE);
      } else if (e.reason === 'mmio' && e.physAddr === this.base) {
        ended.push('ordinary');
        if (!e.isWrite) le_store(e.data, e.len, VMM_VALUE);
      } else if (e.reason === 'io' && BigInt(e.port) === this.base && e.count === 1) {
        ended.push('ordinary');
        if (e.direction === 'in') le_store(e.data, e.size, VMM_VALUE);
      } else {
        throw new Problem(`exit ${e.reason}${'detail' in e ? `: ${e.detail.split('\n')[0]}` : ''}`);
      }
      this.vcpu.runStart();
    }
    const stats = this.vm.ioregionStats()[0];
    const mask = sizeMask(this.r.size);
    const got = this.r.write ? [] : [le_value(this.vm.memory(BR_RESULTS, 8))];
    let want: string[];
    let reads: bigint[];
    if (expect.kind === 'complete') {
      want = [];
      reads = expect.reads;
    } else {
      const failure = expect.kind === 'fail' && this.r.failureExit ? `failure ${errnoName(expect.errno)}` : 'ordinary';
      want = [failure];
      reads = [VMM_VALUE];
      if (expect.kind === 'fail' && !this.r.failureExit && stats.lastErrno !== expect.errno) {
        throw new Problem(`ordinary exit with region errno ${errnoName(stats.lastErrno)}, not ${errnoName(expect.errno)}`);
      }
    }
    if (ended.join() !== want.join()) throw new Problem(`the access ended [${ended.join()}], defined: [${want.join()}]`);
    if (!this.r.write) {
      if (reads.length > 1) got.push(le_value(this.vm.memory(BR_RESULTS + 8n, 8)));
      const wanted = reads.map((v) => v & mask);
      if (got.join() !== wanted.join()) throw new Problem(`the guest read [${got.map((v) => v.toString(16))}], defined: [${wanted.map((v) => v.toString(16))}]`);
    }
  }

}

function response(frame: Uint8Array, length = IOREGIONFD_MSG_SIZE): Uint8Array {
  const out = new Uint8Array(length);
  out.set(frame.subarray(0, Math.min(length, frame.length)));
  return out;
}

/** Play the case against a rig whose KVM_RUN is running. */
function play(rig: Rig, r: Round): void {
  const [f1, f2] = r.frames;
  const value = le_value(f1, 8);
  const stream = r.transport !== 'seqpacket';
  switch (r.kase) {
    case 'garbage':
      rig.command();
      rig.send(f1);
      return rig.finish({ kind: 'complete', reads: [value] });
    case 'short':
      rig.command();
      rig.send(response(f1, r.length));
      if (!stream) return rig.finish({ kind: 'fail', errno: EIO });
      if (rig.returned(r.delayMs)) throw new Problem('KVM_RUN returned with half an answer on a stream');
      // Half the time the rest comes, half the time the device goes.
      if (r.delayMs % 2) {
        rig.send(f1.subarray(r.length));
        return rig.finish({ kind: 'complete', reads: [value] });
      }
      rig.closeDevice();
      return rig.finish({ kind: 'fail', errno: EIO });
    case 'long': {
      rig.command();
      const extra = r.length - IOREGIONFD_MSG_SIZE;
      const bytes = new Uint8Array(r.length);
      bytes.set(f1);
      bytes.set(f2.subarray(0, extra), IOREGIONFD_MSG_SIZE);
      rig.send(bytes);
      if (!stream) return rig.finish({ kind: 'fail', errno: EIO });
      // The extra bytes start the next answer: the second access needs only the rest of it.
      rig.command();
      if (extra < IOREGIONFD_MSG_SIZE) rig.send(f2.subarray(extra));
      return rig.finish({ kind: 'complete', reads: [value, le_value(f2, 8)] });
    }
    case 'late':
      rig.command();
      if (rig.returned(r.delayMs)) throw new Problem('KVM_RUN returned while the device was still to answer');
      rig.send(f1);
      return rig.finish({ kind: 'complete', reads: [value] });
    case 'posted-reply':
      rig.command();
      rig.send(f1);
      rig.command();
      rig.send(f2);
      return rig.finish({ kind: 'complete', reads: [value] });
    case 'close':
      rig.command();
      rig.closeDevice();
      return rig.finish({ kind: 'fail', errno: EIO });
    default:
      return kicked(rig, r);
  }
}

/** The device does not answer; the VMM kicks the vCPU and then resumes it (or destroys the VM). */
function kicked(rig: Rig, r: Round): void {
  rig.command();
  if (rig.returned(r.delayMs)) throw new Problem('KVM_RUN returned while the device was still to answer');
  rig.vcpu.kick();
  const res = waitRun(rig.vcpu, STEP_MS);
  if (!res) throw new Hang('KVM_RUN did not return after a kick');
  const reason = rig.vcpu.kvmRun.getUint32(RUN.exit_reason, true);
  if (res.ret !== -1 || res.errno !== EINTR || reason !== KVM_EXIT_INTR) {
    throw new Problem(`a kick: KVM_RUN ret ${res.ret} ${errnoName(res.errno)} exit ${reason}, defined: -1 EINTR KVM_EXIT_INTR`);
  }
  if (r.kase === 'kick-destroy') return;
  if (r.kase === 'kick-answer') rig.send(r.frames[0]);
  if (r.kase === 'kick-close') rig.closeDevice();
  if (r.kase === 'kick-deassign') rig.vm.deassignIoregion(rig.base, 8n, r.pio);
  rig.vcpu.runStart();
  if (r.kase === 'kick-answer') return rig.finish({ kind: 'complete', reads: [le_value(r.frames[0], 8)] });
  return rig.finish(r.kase === 'kick-close' ? { kind: 'fail', errno: EIO } : { kind: 'ordinary' });
}

async function round(km: KernelModel, r: Round, at: string, result: CampaignResult): Promise<void> {
  const count = r.kase === 'long' && r.transport !== 'seqpacket' ? 2 : 1;
  const vm = km.kvm.createVm();
  let rig: Rig | undefined;
  let hung = false;
  try {
    rig = new Rig(vm, r, count);
    rig.vcpu.runStart();
    play(rig, r);
    result.figures[`case_${r.kase}`] = (result.figures[`case_${r.kase}`] ?? 0) + 1;
  } catch (e) {
    if (km.gone()) return;
    hung = e instanceof Hang;
    if (hung) result.hangs++;
    else result.undefinedErrnos++;
    example(result, `${at}: ${e instanceof Hang ? `${e.message} within ${STEP_MS} ms` : e instanceof Problem ? e.message : `error: ${(e as Error).message}`}`);
  } finally {
    vm.close();
    rig?.closeDevice();
  }
  if (hung) km.replace();
}

export const badReplies: Campaign = {
  name: 'bad-replies',
  description: 'garbage, short, long, late, unasked-for and missing device replies (then close, kick, deassign, destroy)',
  iterations: 500,
  shortIterations: 20,
  run: (options) => runRounds(options, { name: 'bad-replies', unit: 'rounds', every: 50, choose: chooseRound, describe, round }),
};
