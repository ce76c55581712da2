// The ioregionfd data plane in a vCPU thread: one guest access = one 32-byte command written to the
// region's write_fd and, unless it is a posted write, one 32-byte response read from its read_fd.
//
// Semantics (RFC v3 as intended, docs/ioregionfd.md §5, differences from the RFC in §7):
// - Regions sharing a read fd form one serialization context (ioregion-lock.ts), held per <= 8-byte
//   access, so one command is in flight per context and each response reaches the vCPU that sent
//   the command. Size-0 regions are never serialized.
// - The reply is first spun for (recv MSG_DONTWAIT, up to the VM's poll window, docs §5.9), unless
//   other vCPUs queue for the lock behind this one; then the thread blocks in read(2).
// - A kick while blocked or spinning (waiting for the lock, for room to send, or for the reply) returns KVM_RUN
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
import { closeQuietly, getStatusFlags, MessageBatch, MSG_DONTWAIT, O_NONBLOCK, PollSet, POLLOUT, sendRaw, writeRaw } from '../proto/os';
import { AccessResult, DEVICE_GONE, IoDevice, IoFailure, ReadResult } from './io-bus';
import { IOREGION_SHARED, IoregionFields, STAT, statCounters } from './ioregionfd-shared';
import { ContextLock, LeftCommand } from './ioregion-lock';
import type { DeferredWrites, VcpuPort } from './vcpu-port';
import type { DeviceDesc, WorkerDevice } from './device-desc';

/** Posted writes sent per system call at most (sendmmsg on SEQPACKET, one write on streams and pipes). */
const POSTED_BATCH = 16;

class IoregionDevice implements IoDevice, DeferredWrites {
  private readonly f: IoregionFields;
  private readonly addr: bigint;
  private readonly readFd: number;
  private readonly writeFd: number;
  /** The context's lock, for regions that share a read fd (undefined: not serialized). */
  private readonly lock: ContextLock | undefined;
  private readonly stats: BigInt64Array;
  private readonly msg = new Uint8Array(IOREGIONFD_MSG_SIZE);
  private readonly msgView = new DataView(this.msg.buffer);
  /** This command, for the holder before us to send (only a SEQPACKET record goes whole, without waiting). */
  private readonly left: LeftCommand | undefined;
  /** Responses are read into room for two frames, so an oversized SEQPACKET answer is visible. */
  private readonly reply = new Uint8Array(2 * IOREGIONFD_MSG_SIZE);
  private readonly replyView = new DataView(this.reply.buffer);
  private readonly pipeCheck = new PollSet(1);
  private busy = false;
  /** Whether vCPUs wait behind us for the context's lock: then we do not spin for the reply (docs §5.9). */
  private readonly othersQueued = () => this.lock?.queued() ?? false;
  private removed = false;
  /** Posted writes held back (see DeferredWrites): their commands, and what each access was. */
  private batch: MessageBatch | undefined;
  private held: { addr: bigint; len: number; value: bigint }[] = [];

  constructor(desc: DeviceDesc & IoregionFields, private readonly vcpu: VcpuPort) {
    this.f = desc;
    this.addr = desc.addr;
    this.writeFd = desc.fds[desc.fds.length - 1];
    this.readFd = desc.fds.length > 1 ? desc.fds[0] : -1;
    // The VM creates the block before its first region and sends it ahead of any device update.
    const shared = vcpu.shared(IOREGION_SHARED);
    if (!shared) throw new Error('ioregionfd shared memory missing');
    this.stats = statCounters(shared, this.f.statSlot);
    if (desc.context >= 0) this.lock = new ContextLock(shared, desc.context, vcpu, () => this.interrupted());
    if (desc.writeTransport === 'seqpacket') this.left = { words: new Int32Array(this.msg.buffer), writeFd: this.writeFd };
  }

  write(addr: bigint, len: number, value: bigint): AccessResult {
    // len 0 is the FAST_MMIO probe: only the twin on the fast bus answers it, with no size and no data.
    // (A doorbell is not held back: it is one write, and its exit, if it fails, needs the guest's length.)
    if (len === 0) return this.f.twinOf === undefined ? EOPNOTSUPP : this.transact(IOREGIONFD_CMD_WRITE, addr, 0, 0n, false);
    if (len !== 1 && len !== 2 && len !== 4 && len !== 8) return EOPNOTSUPP;
    return this.f.posted ? this.hold(addr, len, value) : this.transact(IOREGIONFD_CMD_WRITE, addr, len, value, true);
  }

  /** A posted write: encoded into the batch, sent by flush() before the vCPU does anything else. */
  private hold(addr: bigint, len: number, value: bigint): AccessResult {
    if (this.removed) return DEVICE_GONE;
    const b = (this.batch ??= new MessageBatch(POSTED_BATCH, IOREGIONFD_MSG_SIZE));
    const i = this.held.length;
    encodeCmdFields(this.vcpu.config.wire, b.view, i * IOREGIONFD_MSG_SIZE, IOREGIONFD_CMD_WRITE, len, false, this.f.userData, addr - this.addr, value);
    this.held.push({ addr, len, value });
    if (i === 0) this.vcpu.defer(this);
    return 0;
  }

  joins(pio: boolean, addr: bigint): boolean {
    if (pio !== this.f.pio || this.held.length >= POSTED_BATCH || this.removed) return false;
    return addr >= this.addr && addr - this.addr < this.f.size;
  }

  flush(): IoFailure[] {
    const n = this.held.length;
    if (n === 0) return [];
    let sent = 0;
    let e = 0;
    this.busy = true;
    try {
      this.lock?.acquire();
      if (!this.removed) [sent, e] = this.sendBatch(n);
    } finally {
      if (this.lock?.held) this.lock.release();
      this.busy = false;
      if (this.removed) this.closeFds();
    }
    if (sent) Atomics.add(this.stats, STAT.posted, BigInt(sent));
    if (sent < n && e) {
      Atomics.add(this.stats, STAT.failures, BigInt(n - sent));
      Atomics.store(this.stats, STAT.lastErrno, BigInt(e));
    }
    const failed = this.held.slice(sent).map((w) => ({
      errno: e, addr: w.addr, len: w.len, isWrite: true, isPio: this.f.pio, data: w.value, userData: this.f.userData,
    }));
    this.held = [];
    return failed;
  }

  /**
   * Send the first n held commands: [sent, errno of the failure or 0]. A SEQPACKET record per command
   * (sendmmsg), the bytes in one go on streams and pipes (a partial write is resumed, never resent).
   * A kick while the fd is full returns to the VMM and the rest goes when KVM_RUN resumes; the region
   * removed meanwhile stops the batch (a partly sent command is completed, the rest exit as ordinary).
   */
  private sendBatch(n: number): [number, number] {
    const fd = this.writeFd;
    const b = this.batch!;
    const records = this.f.writeTransport === 'seqpacket';
    const total = records ? n : n * IOREGIONFD_MSG_SIZE;
    let done = 0;
    while (done < total) {
      let r: number;
      if (records) {
        r = b.send(fd, done, n - done, MSG_DONTWAIT);
      } else if (this.f.writeTransport === 'stream') {
        r = sendRaw(fd, b.bytes.subarray(done), total - done, MSG_DONTWAIT);
      } else {
        this.pipeCheck.set(0, fd, POLLOUT);
        r = this.pipeCheck.wait(1, 0) ? writeRaw(fd, b.bytes.subarray(done), total - done) : -EAGAIN;
      }
      if (r > 0) {
        done += r;
        continue;
      }
      if (r !== -EAGAIN) return [records ? done : Math.floor(done / IOREGIONFD_MSG_SIZE), r === 0 ? EIO : -r];
      if (IoregionDevice.nonBlocking(fd)) return [records ? done : Math.floor(done / IOREGIONFD_MSG_SIZE), EINVAL];
      if (!this.vcpu.waitFd(fd, POLLOUT)) {
        this.interrupted();
        if (this.removed) {
          if (!records && done % IOREGIONFD_MSG_SIZE) this.completeFrame(b.bytes.subarray(done - (done % IOREGIONFD_MSG_SIZE)), done % IOREGIONFD_MSG_SIZE);
          return [records ? done : Math.ceil(done / IOREGIONFD_MSG_SIZE), 0];
        }
      }
    }
    return [n, 0];
  }

  /** The rest of a partly sent frame, so other regions on the stream stay in step; false if the peer is gone. */
  private completeFrame(frame: Uint8Array, sent: number): boolean {
    while (sent < IOREGIONFD_MSG_SIZE) {
      const r = sendRaw(this.writeFd, frame.subarray(sent), IOREGIONFD_MSG_SIZE - sent, 0);
      if (r <= 0) return false;
      sent += r;
    }
    return true;
  }

  read(addr: bigint, len: number, out: ReadResult): AccessResult {
    // A size-0 region is a write-only doorbell (the RFC's READ-without-reply defect is not modelled).
    if (this.f.size === 0n || (len !== 1 && len !== 2 && len !== 4 && len !== 8)) return EOPNOTSUPP;
    const e = this.transact(IOREGIONFD_CMD_READ, addr, len, 0n, true);
    if (e === 0) out.value = truncateToSize(decodeResp(this.replyView, 0), len);
    return e;
  }

  private transact(cmd: number, addr: bigint, len: number, value: bigint, resp: boolean): AccessResult {
    this.busy = true;
    // A FAST_MMIO doorbell encodes like a 1-byte write of 0 (byte-identical in v3, valid in v1).
    // Encoded before the lock: a waiter leaves the command for the holder to send (lock()).
    encodeCmdFields(this.vcpu.config.wire, this.msgView, 0, cmd, Math.max(len, 1), resp, this.f.userData, addr - this.addr, value);
    try {
      const sentForUs = this.lock?.acquire(resp ? this.left : undefined) ?? false;
      if (this.removed) {
        if (sentForUs) this.lock!.countOrphan();
        return DEVICE_GONE;
      }
      let e = sentForUs ? 0 : this.send(resp);
      if (e === 0 && resp) e = this.receive();
      if (e === 0) {
        Atomics.add(this.stats, cmd === IOREGIONFD_CMD_READ ? STAT.reads : resp ? STAT.writes : STAT.posted, 1n);
        this.lock?.sendForNext();
      } else if (e !== DEVICE_GONE) {
        Atomics.add(this.stats, STAT.failures, 1n);
        Atomics.store(this.stats, STAT.lastErrno, BigInt(e));
        return { errno: e, addr, len, isWrite: cmd === IOREGIONFD_CMD_WRITE, isPio: this.f.pio, data: value, userData: this.f.userData };
      }
      return e;
    } finally {
      if (this.lock?.held) this.lock.release();
      this.busy = false;
      if (this.removed) this.closeFds();
    }
  }

  private interrupted(): void {
    // A deassigned region's stats slot may already belong to another region.
    if (!this.removed) Atomics.add(this.stats, STAT.interrupted, 1n);
    this.vcpu.interrupted();
  }

  /**
   * The region went away while this vCPU was interrupted inside an access. Other regions may share
   * the fds, so leave them in step: finish a partly sent command (a torn frame would corrupt the
   * stream), and if a reply to it is still coming, count it as an orphan for the next transaction on
   * this read fd to discard.
   */
  private abandon(sent: number, resp: boolean): number {
    if (sent > 0 && sent < IOREGIONFD_MSG_SIZE && !this.completeFrame(this.msg, sent)) return DEVICE_GONE;
    if (sent > 0 && resp) this.lock?.countOrphan();
    return DEVICE_GONE;
  }

  /** True when someone made the fd non-blocking: the RFC then sees EAGAIN and fails with EINVAL. */
  private static nonBlocking(fd: number): boolean {
    const flags = getStatusFlags(fd);
    return flags >= 0 && (flags & O_NONBLOCK) !== 0;
  }

  /** Send the whole command; resumes a partial send after a kick instead of starting over. */
  private send(resp: boolean): number {
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
        if (this.removed) return this.abandon(sent, resp);
      }
    }
    return 0;
  }

  /**
   * Read one whole response: spun for first on a socket, then blocked in read(2) itself; after a
   * kick, only the reply is awaited (the command is not resent). On an fd someone made O_NONBLOCK an
   * idle device gives EAGAIN once the spin is over, which the RFC reports as EINVAL.
   */
  private receive(): number {
    const fd = this.readFd;
    const seqpacket = this.f.readTransport === 'seqpacket';
    const socket = this.f.readTransport !== 'pipe';
    let got = 0;
    while (got < IOREGIONFD_MSG_SIZE) {
      const buf = got ? this.reply.subarray(got) : this.reply;
      const len = seqpacket ? this.reply.length : IOREGIONFD_MSG_SIZE - got;
      // Spin first (the reply often comes within microseconds, and a blocked thread costs a wake-up).
      let n: number | 'kicked' = socket ? this.vcpu.recvPolled(fd, buf, len, this.othersQueued) : -EAGAIN;
      if (n === -EAGAIN) n = this.vcpu.readWakeable(fd, buf, len);
      if (n === 'kicked') {
        this.interrupted();
        if (this.removed) return this.abandon(IOREGIONFD_MSG_SIZE, true);
        continue;
      }
      if (n === -EINTR) continue;
      if (n === -EAGAIN) return EINVAL;
      const e = this.took(n, seqpacket);
      if (e) return e;
      got += n;
      // Replies to commands of regions deassigned mid-access come first: drop them (we hold the lock).
      if (got === IOREGIONFD_MSG_SIZE && this.lock?.takeOrphan()) got = 0;
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

export function createIoregionDevice(desc: DeviceDesc & IoregionFields, vcpu: VcpuPort): WorkerDevice {
  const dev = new IoregionDevice(desc, vcpu);
  return { bus: desc.bus, dev, close: () => dev.close() };
}
