// Serves ioctls arriving on a control socket (system or VM fd) from the kernel-model's main thread.

import koffi from 'koffi';
import { decodeRequest, encodeReply, IoctlRequest, REPLY_TRUNCATED } from '../proto/control';
import { EBADF, EINVAL, EIO } from '../proto/errno';
import {
  abstractName, bindAbstract, closeQuietly, dup, MSG_DONTWAIT, ReceivedMessage, receiveMessage, sendMessage, socketpair,
} from '../proto/os';

/** Abstract-namespace prefix of the kernel-model's end of every control socket (system, VM, vCPU fd). */
const CONTROL_NAME_PREFIX = 'ioregionfd-emu/kvm-control/';
let controlSocketCount = 0;

/**
 * Name the kernel-model's end of a control socket, so that the other end (the VMM's system, VM or
 * vCPU fd) is recognisable when a VMM hands it back as a data-plane fd: its getpeername(2) is this name.
 */
export function nameControlSocket(fd: number): void {
  bindAbstract(fd, `${CONTROL_NAME_PREFIX}${process.pid}/${++controlSocketCount}`);
}

/** A new control socketpair: [the kernel-model's named end, the VMM's end]. */
export function controlSocketpair(): [number, number] {
  const pair = socketpair('seqpacket');
  nameControlSocket(pair[0]);
  return pair;
}

/** True for either end of a control socket of any kernel-model (ours or another one's). */
export function isControlSocket(fd: number): boolean {
  return [abstractName(fd, 'peer'), abstractName(fd, 'self')].some((n) => n?.startsWith(CONTROL_NAME_PREFIX));
}

/** Thrown by an ioctl handler to answer ret -1 with this errno; `detail` names the offending value. */
export class IoctlFailure extends Error {
  constructor(readonly errno: number, readonly detail: string) {
    super(detail);
  }
}

/** Shorthand: `throw fail(EINVAL, 'memory_size 0x1001 is not page aligned')`. */
export function fail(errno: number, detail: string): IoctlFailure {
  return new IoctlFailure(errno, detail);
}

export interface Reply {
  ret?: number;
  data?: Uint8Array;
  /** fds to hand to the caller; closed here once sent. */
  fds?: number[];
}

/**
 * The fds that arrived with one request, by the caller's numbering. A handler take()s what it keeps;
 * everything else is closed after the handler returns, so no received fd can leak.
 */
export class ReceivedFds {
  private readonly byNumber = new Map<number, number>();
  private readonly taken = new Map<number, number>();
  constructor(numbers: number[], fds: number[]) {
    fds.forEach((fd, i) => {
      const n = numbers[i];
      if (n === undefined || this.byNumber.has(n)) closeQuietly(fd);
      else this.byNumber.set(n, fd);
    });
  }
  /**
   * Claim the fd the caller knows as `number`; EBADF (the kernel's fdget failure) if none came. The
   * same number in two fields (read_fd == write_fd) gives the second claim its own reference.
   */
  take(number: number, field: string): number {
    const again = this.taken.get(number);
    if (again !== undefined) return dup(again);
    const fd = this.byNumber.get(number);
    if (fd === undefined) throw fail(EBADF, `${field} ${number} is not an open fd`);
    this.byNumber.delete(number);
    this.taken.set(number, fd);
    return fd;
  }
  /** Look at an fd without claiming it. */
  peek(number: number): number | undefined {
    return this.byNumber.get(number);
  }
  /** Claim the first fd, whatever its number (the memfd beside KVM_SET_USER_MEMORY_REGION). */
  takeFirst(): number | undefined {
    for (const [n, fd] of this.byNumber) {
      this.byNumber.delete(n);
      return fd;
    }
    return undefined;
  }
  closeRest(): void {
    for (const fd of this.byNumber.values()) closeQuietly(fd);
    this.byNumber.clear();
  }
}

export type Handler = (req: IoctlRequest, fds: ReceivedFds) => Reply;

/**
 * Run one handler on a received control message and turn its outcome into a reply; never throws.
 * Whatever the bytes are (empty, truncated, not protobuf), the caller gets an errno and the fd stays
 * usable: an empty message is request 0, an unknown ioctl.
 */
export function answer(handler: Handler, msg: ReceivedMessage): { message: Uint8Array; fds: number[] } {
  if (msg.truncated) return { message: REPLY_TRUNCATED, fds: [] };
  const rawFds = msg.fds;
  let req: IoctlRequest;
  try {
    req = decodeRequest(msg.data);
  } catch (e) {
    rawFds.forEach(closeQuietly);
    return { message: encodeReply({ ret: -1, errno: EINVAL, detail: `malformed ioctl message: ${(e as Error).message}` }), fds: [] };
  }
  const received = new ReceivedFds(req.fdNumbers, rawFds);
  try {
    const r = handler(req, received);
    return { message: encodeReply({ ret: r.ret ?? 0, data: r.data ? Buffer.from(r.data) : undefined }), fds: r.fds ?? [] };
  } catch (e) {
    if (e instanceof IoctlFailure) return { message: encodeReply({ ret: -1, errno: e.errno, detail: e.detail }), fds: [] };
    process.stderr.write(`kernel-model: internal error in ioctl 0x${req.request.toString(16)}: ${(e as Error).stack}\n`);
    return { message: encodeReply({ ret: -1, errno: EIO, detail: `internal error: ${(e as Error).message}` }), fds: [] };
  } finally {
    received.closeRest();
  }
}

/**
 * Serves one SEQPACKET control socket on the main thread's event loop (koffi uv_poll; it makes our end
 * O_NONBLOCK, which is our end's own open file description). onClose runs once, at EOF or error.
 */
export class SocketServer {
  private handle: ReturnType<typeof koffi.node.poll> | undefined;
  constructor(readonly fd: number, private readonly handler: Handler, private readonly onClose: () => void) {
    this.handle = koffi.node.poll(fd, { readable: true, writable: false, disconnect: true }, () => this.drain());
  }

  private drain(): void {
    for (;;) {
      let msg;
      try {
        msg = receiveMessage(this.fd, MSG_DONTWAIT);
      } catch (e) {
        process.stderr.write(`kernel-model: control socket ${this.fd} failed: ${(e as Error).message}\n`);
        return this.close();
      }
      if (msg === undefined) return;
      if (msg === null) return this.close();
      const { message, fds } = answer(this.handler, msg);
      try {
        sendMessage(this.fd, message, fds);
      } catch {
        fds.forEach(closeQuietly);
        return this.close();
      }
      fds.forEach(closeQuietly);
    }
  }

  /** Stop serving and close the socket (idempotent). */
  close(): void {
    if (!this.handle) return;
    this.handle.close();
    this.handle = undefined;
    closeQuietly(this.fd);
    this.onClose();
  }
}
