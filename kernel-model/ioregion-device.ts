// The ioregionfd data plane in a vCPU thread: one guest access = one 32-byte command written to the
// region's write_fd and, unless it is a posted write, one 32-byte response read from its read_fd.
//
// Semantics (RFC v3 as intended, spec/ioregionfd.md §2-§3):
// - Regions sharing a read fd form one serialization context: a FIFO ticket lock in VM-shared memory,
//   held per <= 8-byte access, so one command is in flight per context and each response reaches the
//   vCPU that sent the command. Size-0 regions are never serialized.
// - A kick while blocked (waiting for the lock, for room to send, or for the reply) returns KVM_RUN
//   with EINTR / KVM_EXIT_INTR; the access stays on this thread's stack, so the next KVM_RUN resumes
//   it exactly where it was: the rest of a partly sent command is sent, a delivered one is not resent,
//   a waiter keeps its place in the queue (and a holder keeps the lock).
// - Failures (EOF, short or oversized response, dead peer, EAGAIN on an fd someone made non-blocking,
//   mapped to EINVAL as the RFC does) end the access with that errno: the CPU falls back to an
//   ordinary exit, or reports KVM_EXIT_IOREGIONFD_FAILURE if the VM opted in. Counted per region.
// - A region deassigned while a vCPU is interrupted inside one of its accesses: the rest of the
//   access becomes an ordinary exit (DEVICE_GONE).

import { EAGAIN, EINTR, EINVAL, EIO, EOPNOTSUPP } from '../proto/errno';
import {
  decodeResp, encodeCmdFields, IOREGIONFD_CMD_READ, IOREGIONFD_CMD_WRITE, IOREGIONFD_MSG_SIZE, truncateToSize,
} from '../proto/ioregionfd-wire';
import { closeQuietly, getStatusFlags, MSG_DONTWAIT, O_NONBLOCK, PollSet, POLLOUT, sendRaw, writeRaw } from '../proto/os';
import { DEVICE_GONE, IoDevice, ReadResult } from './io-bus';
import { CONTEXT_BYTES, FdTransport, IOREGION_SHARED, IoregionFields, MAX_CONTEXTS, STAT, STAT_WORDS } from './ioregionfd';
import type { VcpuThread } from './vcpu-thread';
import type { DeviceDesc, WorkerDevice } from './worker-devices';

const LOCK_POLL_MS = 5;

class IoregionDevice implements IoDevice {
  private readonly f: IoregionFields;
  private readonly addr: bigint;
  private readonly readFd: number;
  private readonly writeFd: number;
  private readonly lockWords: Int32Array;
  private readonly stats: BigInt64Array;
  private readonly msg = new Uint8Array(IOREGIONFD_MSG_SIZE);
  private readonly msgView = new DataView(this.msg.buffer);
  /** Responses are read into room for two frames, so an oversized SEQPACKET answer is visible. */
  private readonly reply = new Uint8Array(2 * IOREGIONFD_MSG_SIZE);
  private readonly replyView = new DataView(this.reply.buffer);
  private readonly pipeCheck = new PollSet(1);
  private locked = false;
  private busy = false;
  private removed = false;

  constructor(desc: DeviceDesc, private readonly vcpu: VcpuThread) {
    this.f = desc as unknown as IoregionFields;
    this.addr = desc.addr;
    this.writeFd = desc.fds[desc.fds.length - 1];
    this.readFd = desc.fds.length > 1 ? desc.fds[0] : -1;
    const shared = vcpu.shared.get(IOREGION_SHARED);
    if (!shared) throw new Error('ioregionfd shared memory missing');
    this.lockWords = new Int32Array(shared, 0, MAX_CONTEXTS * 2);
    this.stats = new BigInt64Array(shared, CONTEXT_BYTES + this.f.statSlot * STAT_WORDS * 8, STAT_WORDS);
  }

  write(addr: bigint, len: number, value: bigint): number {
    // len 0 is the FAST_MMIO probe: only the twin on the fast bus answers it, with no size and no data.
    if (len === 0) return this.f.twinOf === undefined ? EOPNOTSUPP : this.transact(IOREGIONFD_CMD_WRITE, addr, 0, 0n, false);
    if (len !== 1 && len !== 2 && len !== 4 && len !== 8) return EOPNOTSUPP;
    return this.transact(IOREGIONFD_CMD_WRITE, addr, len, value, !this.f.posted);
  }

  read(addr: bigint, len: number, out: ReadResult): number {
    // A size-0 region is a write-only doorbell (the RFC's READ-without-reply defect is not modelled).
    if (this.f.size === 0n || (len !== 1 && len !== 2 && len !== 4 && len !== 8)) return EOPNOTSUPP;
    const e = this.transact(IOREGIONFD_CMD_READ, addr, len, 0n, true);
    if (e === 0) out.value = truncateToSize(decodeResp(this.replyView, 0), len);
    return e;
  }

  private transact(cmd: number, addr: bigint, len: number, value: bigint, resp: boolean): number {
    this.busy = true;
    try {
      if (this.f.context >= 0) this.lock();
      if (this.removed) return DEVICE_GONE;
      // A FAST_MMIO doorbell encodes like a 1-byte write of 0 (byte-identical in v3, valid in v1).
      encodeCmdFields(this.vcpu.config.wire, this.msgView, 0, cmd, Math.max(len, 1), resp, this.f.userData, addr - this.addr, value);
      let e = this.send();
      if (e === 0 && resp) e = this.receive();
      if (e === 0) {
        Atomics.add(this.stats, cmd === IOREGIONFD_CMD_READ ? STAT.reads : resp ? STAT.writes : STAT.posted, 1n);
      } else if (e !== DEVICE_GONE) {
        Atomics.add(this.stats, STAT.failures, 1n);
        Atomics.store(this.stats, STAT.lastErrno, BigInt(e));
        this.vcpu.ioFailure = {
          addr, len, isWrite: cmd === IOREGIONFD_CMD_WRITE, isPio: this.f.pio, data: value, userData: this.f.userData, errno: e,
        };
      }
      return e;
    } finally {
      if (this.locked) this.unlock();
      this.busy = false;
      if (this.removed) this.closeFds();
    }
  }

  /** Take this context's ticket and wait for it; a kick returns to the VMM without losing the place. */
  private lock(): void {
    const w = this.lockWords;
    const serving = 2 * this.f.context + 1;
    const ticket = Atomics.add(w, 2 * this.f.context, 1);
    for (;;) {
      const now = Atomics.load(w, serving);
      if (now === ticket) break;
      Atomics.wait(w, serving, now, LOCK_POLL_MS);
      if (this.vcpu.checkSignal()) this.interrupted();
    }
    this.locked = true;
  }

  private unlock(): void {
    const serving = 2 * this.f.context + 1;
    Atomics.add(this.lockWords, serving, 1);
    Atomics.notify(this.lockWords, serving);
    this.locked = false;
  }

  private interrupted(): void {
    Atomics.add(this.stats, STAT.interrupted, 1n);
    this.vcpu.interrupted();
  }

  /** True when someone made the fd non-blocking: the RFC then sees EAGAIN and fails with EINVAL. */
  private static nonBlocking(fd: number): boolean {
    const flags = getStatusFlags(fd);
    return flags >= 0 && (flags & O_NONBLOCK) !== 0;
  }

  /** Send the whole command; resumes a partial send after a kick instead of starting over. */
  private send(): number {
    const fd = this.writeFd;
    const socket = this.f.writeTransport !== 'pipe';
    let sent = 0;
    while (sent < IOREGIONFD_MSG_SIZE) {
      const rest = sent ? this.msg.subarray(sent) : this.msg;
      let n: number;
      if (socket) {
        n = sendRaw(fd, rest, IOREGIONFD_MSG_SIZE - sent, MSG_DONTWAIT);
      } else {
        // A pipe write of 32 bytes blocks only when the pipe is full; look first so a kick can get in.
        this.pipeCheck.set(0, fd, POLLOUT);
        n = this.pipeCheck.wait(1, 0) ? writeRaw(fd, rest, IOREGIONFD_MSG_SIZE - sent) : -EAGAIN;
      }
      if (n >= 0) {
        sent += n;
        continue;
      }
      if (n !== -EAGAIN) return -n;
      if (IoregionDevice.nonBlocking(fd)) return EINVAL;
      if (!this.vcpu.waitFd(fd, POLLOUT)) {
        this.interrupted();
        if (this.removed) return DEVICE_GONE;
      }
    }
    return 0;
  }

  /**
   * Read one whole response, blocked in read(2) itself; after a kick, only the reply is awaited (the
   * command is not resent). On an fd someone made O_NONBLOCK an idle device gives EAGAIN at once,
   * which the RFC reports as EINVAL.
   */
  private receive(): number {
    const fd = this.readFd;
    const seqpacket = this.f.readTransport === 'seqpacket';
    let got = 0;
    while (got < IOREGIONFD_MSG_SIZE) {
      const n = this.vcpu.readWakeable(fd, got ? this.reply.subarray(got) : this.reply, seqpacket ? this.reply.length : IOREGIONFD_MSG_SIZE - got);
      if (n === 'kicked') {
        this.interrupted();
        if (this.removed) return DEVICE_GONE;
        continue;
      }
      if (n === -EINTR) continue;
      if (n === -EAGAIN) return EINVAL;
      const e = this.took(n, seqpacket);
      if (e) return e;
      got += n;
    }
    return 0;
  }

  /** Judge one read of a response: EOF and wrongly sized SEQPACKET messages are EIO. */
  private took(n: number, seqpacket: boolean): number {
    if (n < 0) return -n;
    if (n === 0) return EIO;
    if (seqpacket && n !== IOREGIONFD_MSG_SIZE) return EIO;
    return 0;
  }

  close(): void {
    this.removed = true;
    if (!this.busy) this.closeFds();
  }

  private closeFds(): void {
    closeQuietly(this.writeFd);
    closeQuietly(this.readFd);
  }
}

export function createIoregionDevice(desc: DeviceDesc, vcpu: VcpuThread): WorkerDevice {
  const dev = new IoregionDevice(desc, vcpu);
  return { bus: desc.bus, dev, close: () => dev.close() };
}

export type { FdTransport };
