// The bridge's end of the socket to an `x-remote` QEMU: one request at a time, each answered (where
// the protocol answers) before the next is sent, all in blocking system calls, as the device task's
// serve loop is synchronous. The remote behind it is an interface, so the bridge's logic can be
// tested in memory (see fake-remote.ts) and against the socket alike.

import { EPIPE, errnoName } from '../../../proto/errno';
import { ProtocolError, SyscallError } from '../../../proto/errors';
import { closeQuietly, readRaw, sendMessage, sendRaw } from '../../../proto/os';
import {
  BAR_ACCESS_MSG_SIZE, checkRet, decodeHeader, encodeBarAccessInto, encodeBare, encodeConfigAccess, encodeSyncSysmem,
  MPQEMU_CMD_BAR_READ, MPQEMU_CMD_BAR_WRITE, MPQEMU_CMD_DEVICE_RESET, MPQEMU_CMD_PCI_CFGREAD, MPQEMU_CMD_PCI_CFGWRITE,
  MPQEMU_CMD_SET_IRQFD, MPQEMU_HDR_SIZE, MPQEMU_MAX_FDS, mpqemuCmdName, PCI_CONFIG_SPACE_SIZE, SysmemRegion,
} from './wire';

/**
 * The remote can serve no more: it is gone (EOF, EPIPE, ECONNRESET: `code` says which) or it broke
 * the protocol (`code` 'EPROTO'). Either way the device has failed.
 */
export class RemoteFailure extends Error {
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.name = 'RemoteFailure';
    this.code = code;
  }

  /** True when the remote went away, false when it answered something that breaks the protocol. */
  get gone(): boolean {
    return this.code !== 'EPROTO';
  }
}

/** A guest RAM region for the remote: the memfd and where its bytes sit in guest-physical space. */
export interface SysmemFd extends SysmemRegion {
  fd: number;
}

/** What the bridge asks of a remote PCI device. Every method throws RemoteFailure, nothing else. */
export interface RemoteLink {
  /** PCI_CFGREAD of `len` (1, 2 or 4) bytes at `addr` (< 4 KiB). */
  configRead(addr: number, len: number): number;
  /** PCI_CFGWRITE. */
  configWrite(addr: number, val: number, len: number): void;
  /** BAR_READ at an absolute address of the memory or I/O space. */
  barRead(addr: bigint, size: number, memory: boolean): bigint;
  /** BAR_WRITE; returns once the remote has performed it. */
  barWrite(addr: bigint, size: number, memory: boolean, val: bigint): void;
  /** SYNC_SYSMEM: replace the remote's map of guest RAM (1 to 7 regions). No answer. */
  syncSysmem(regions: readonly SysmemFd[]): void;
  /** SET_IRQFD: the eventfd the remote signals when INTx rises, and the one that tells it of the EOI. No answer. */
  setIrqfd(intxFd: number, resampleFd: number): void;
  /** DEVICE_RESET: the device goes back to its reset state; config space (BARs, COMMAND) stays. */
  deviceReset(): void;
}

/** RemoteLink over the stream socket whose other end the remote QEMU holds. */
export class SocketLink implements RemoteLink {
  private readonly out = new Uint8Array(MPQEMU_HDR_SIZE + BAR_ACCESS_MSG_SIZE);
  private readonly outView = new DataView(this.out.buffer);
  private readonly reply = new Uint8Array(MPQEMU_HDR_SIZE + 8);
  private readonly replyView = new DataView(this.reply.buffer);
  private open = true;

  constructor(readonly fd: number) {}

  configRead(addr: number, len: number): number {
    this.checkConfigAccess(addr, len);
    this.send(encodeConfigAccess(MPQEMU_CMD_PCI_CFGREAD, addr, len), MPQEMU_CMD_PCI_CFGREAD);
    return Number(BigInt.asUintN(32, this.awaitRet(8, MPQEMU_CMD_PCI_CFGREAD)));
  }

  configWrite(addr: number, val: number, len: number): void {
    this.checkConfigAccess(addr, len);
    this.send(encodeConfigAccess(MPQEMU_CMD_PCI_CFGWRITE, addr, len, val), MPQEMU_CMD_PCI_CFGWRITE);
    this.awaitRet(8, MPQEMU_CMD_PCI_CFGWRITE);
  }

  barRead(addr: bigint, size: number, memory: boolean): bigint {
    encodeBarAccessInto(this.outView, MPQEMU_CMD_BAR_READ, addr, size, memory);
    this.send(this.out, MPQEMU_CMD_BAR_READ);
    return this.awaitRet(8, MPQEMU_CMD_BAR_READ);
  }

  barWrite(addr: bigint, size: number, memory: boolean, val: bigint): void {
    encodeBarAccessInto(this.outView, MPQEMU_CMD_BAR_WRITE, addr, size, memory, val);
    this.send(this.out, MPQEMU_CMD_BAR_WRITE);
    this.awaitRet(8, MPQEMU_CMD_BAR_WRITE);
  }

  syncSysmem(regions: readonly SysmemFd[]): void {
    if (regions.length > MPQEMU_MAX_FDS) throw new RangeError(`SYNC_SYSMEM takes at most ${MPQEMU_MAX_FDS} regions`);
    this.sendWithFds(encodeSyncSysmem(regions), regions.map((r) => r.fd), 'SYNC_SYSMEM');
  }

  setIrqfd(intxFd: number, resampleFd: number): void {
    this.sendWithFds(encodeBare(MPQEMU_CMD_SET_IRQFD), [intxFd, resampleFd], mpqemuCmdName(MPQEMU_CMD_SET_IRQFD));
  }

  deviceReset(): void {
    this.send(encodeBare(MPQEMU_CMD_DEVICE_RESET), MPQEMU_CMD_DEVICE_RESET);
    this.awaitRet(0, MPQEMU_CMD_DEVICE_RESET);
  }

  /** Close our end: the remote sees EOF and shuts down. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    closeQuietly(this.fd);
  }

  /** Offsets past config space make the remote fail and exit; never send one. */
  private checkConfigAccess(addr: number, len: number): void {
    if (!(len === 1 || len === 2 || len === 4) || !(addr >= 0 && addr + len <= PCI_CONFIG_SPACE_SIZE)) {
      throw new RangeError(`config access of ${len} bytes at 0x${addr.toString(16)} is outside config space`);
    }
  }

  /** The remote went away; `errno` is what the socket said, or 'EOF'. */
  private gone(what: string, errno: number | 'EOF'): never {
    const code = errno === 'EOF' ? 'EOF' : errnoName(errno);
    throw new RemoteFailure(`${what}: the remote is gone (${code})`, code);
  }

  private send(bytes: Uint8Array, cmd: number): void {
    if (!this.open) this.gone(`sending ${mpqemuCmdName(cmd)}`, EPIPE);
    let done = 0;
    while (done < bytes.length) {
      const n = sendRaw(this.fd, done ? bytes.subarray(done) : bytes, bytes.length - done);
      if (n < 0) this.gone(`sending ${mpqemuCmdName(cmd)}`, -n);
      done += n;
    }
  }

  private sendWithFds(bytes: Uint8Array, fds: number[], what: string): void {
    if (!this.open) this.gone(`sending ${what}`, EPIPE);
    try {
      sendMessage(this.fd, bytes, fds);
    } catch (e) {
      if (e instanceof SyscallError) this.gone(`sending ${what}`, e.errno);
      throw e;
    }
  }

  /** Read the RET that answers `request`: exactly a header and `payload` bytes; returns its u64 (0 without one). */
  private awaitRet(payload: 0 | 8, request: number): bigint {
    const want = MPQEMU_HDR_SIZE + payload;
    let got = 0;
    let checked = false;
    while (got < want) {
      // Never ask for more than this reply: the stream must stay in step for the next request. (A
      // reply whose header disagrees is fatal anyway, so reading its payload size up front is safe.)
      const n = readRaw(this.fd, got ? this.reply.subarray(got) : this.reply, want - got);
      if (n === 0) this.gone(`waiting for the answer to ${mpqemuCmdName(request)}`, 'EOF');
      if (n < 0) this.gone(`waiting for the answer to ${mpqemuCmdName(request)}`, -n);
      got += n;
      if (!checked && got >= MPQEMU_HDR_SIZE) {
        try {
          checkRet(decodeHeader(this.replyView), payload, request);
        } catch (e) {
          throw new RemoteFailure((e as ProtocolError).message, 'EPROTO');
        }
        checked = true;
      }
    }
    return payload ? this.replyView.getBigUint64(MPQEMU_HDR_SIZE, true) : 0n;
  }
}
