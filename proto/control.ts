// The control-plane contract: encoding of ioctl requests and replies (proto/kvm.proto), and the
// client side of one ioctl round trip over a kernel-model socket.

import * as path from 'path';
import * as protobuf from 'protobufjs';
import { E2BIG, EBADF, ECONNRESET, EIO, EMSGSIZE, EPIPE } from './errno';
import { SyscallError } from './errors';
import { IOEVENTFD, IOREGION, IRQFD, KVM_IOEVENTFD, KVM_IRQFD, KVM_SET_IOREGION } from './kvm-uapi';
import { closeQuietly, isOpen, MAX_MESSAGE, receiveMessage, SCM_MAX_FD, sendMessage } from './os';

const root = protobuf.loadSync(path.join(__dirname, 'kvm.proto'));
const IoctlRequestType = root.lookupType('kvm.IoctlRequest');
const IoctlReplyType = root.lookupType('kvm.IoctlReply');

/** Protobuf message types of the emulator-private ioctls. */
export const GuestEntryType = root.lookupType('kvm.GuestEntry');
export const IoregionStatsListType = root.lookupType('kvm.IoregionStatsList');
export const ObjectCountsType = root.lookupType('kvm.ObjectCounts');

export interface IoctlRequest {
  request: number;
  arg: bigint;
  data: Buffer;
  fdNumbers: number[];
}

export interface IoctlReply {
  ret: number;
  errno: number;
  data: Buffer;
  detail: string;
}

/** protobufjs hands 64-bit fields back as Long objects or numbers; we want bigint. */
function toBigInt(v: unknown, unsigned: boolean): bigint {
  if (v === undefined || v === null) return 0n;
  if (typeof v === 'number' || typeof v === 'bigint') return BigInt(v);
  const s = (v as { toString(): string }).toString();
  return unsigned ? BigInt.asUintN(64, BigInt(s)) : BigInt(s);
}

export function encodeRequest(r: Partial<IoctlRequest> & { request: number }): Uint8Array {
  return IoctlRequestType.encode({
    request: r.request,
    // protobufjs parses a decimal string for 64-bit fields without losing precision.
    arg: r.arg ? BigInt.asUintN(64, r.arg).toString() : 0,
    data: r.data ?? Buffer.alloc(0),
    fdNumbers: r.fdNumbers ?? [],
  }).finish();
}

/** Decode a request; throws for a malformed message (the server answers EINVAL). */
export function decodeRequest(buf: Uint8Array): IoctlRequest {
  const m = IoctlRequestType.decode(buf) as unknown as {
    request: number; arg: unknown; data: Uint8Array; fdNumbers: number[];
  };
  return {
    request: m.request >>> 0,
    arg: toBigInt(m.arg, true),
    data: Buffer.from(m.data ?? []),
    fdNumbers: m.fdNumbers ?? [],
  };
}

export function encodeReply(r: Partial<IoctlReply>): Uint8Array {
  return IoctlReplyType.encode({
    ret: r.ret ?? 0,
    errno: r.errno ?? 0,
    data: r.data ?? Buffer.alloc(0),
    detail: r.detail ?? '',
  }).finish();
}

/** The answer to a control message that did not fit: the kernel's errno for an argument too big. */
export const REPLY_TRUNCATED = encodeReply({
  ret: -1, errno: E2BIG, detail: `ioctl message over ${MAX_MESSAGE} bytes or ${SCM_MAX_FD} fds (discarded)`,
});

/** Decode a reply; throws for a malformed one, an empty one included (every reply carries `ret`). */
export function decodeReply(buf: Uint8Array): IoctlReply {
  const m = IoctlReplyType.decode(buf) as unknown as { ret?: unknown; errno: number; data: Uint8Array; detail: string };
  if (!Object.hasOwn(m, 'ret')) throw new Error('reply without ret');
  return { ret: Number(toBigInt(m.ret, false)), errno: m.errno ?? 0, data: Buffer.from(m.data ?? []), detail: m.detail ?? '' };
}

/**
 * Which s32 fields of an ioctl's struct hold fds of the caller. The client attaches those fds with
 * SCM_RIGHTS so the kernel-model can take its own references, exactly where kvm.ko would fget().
 */
const FD_FIELDS: Record<number, number[]> = {
  [KVM_IOEVENTFD]: [IOEVENTFD.fd],
  [KVM_SET_IOREGION]: [IOREGION.read_fd, IOREGION.write_fd],
  [KVM_IRQFD]: [IRQFD.fd, IRQFD.resamplefd],
};

/** Register the fd-carrying fields of a further ioctl (e.g. one whose number a user changed). */
export function declareFdFields(request: number, offsets: number[]): void {
  FD_FIELDS[request >>> 0] = offsets;
}

/** The result of an ioctl as the raw syscall would give it: ret, errno, plus any result bytes and new fds. */
export interface IoctlResult extends IoctlReply {
  fds: number[];
}

/**
 * One ioctl round trip on a kernel-model socket (the raw `ioctl(2)`: never throws for an ioctl error,
 * which comes back as ret -1 / errno). A dead kernel-model gives EIO, as KVM does for a dead VM.
 * `extraFds` are attached in addition to the fds named by the struct (e.g. a memslot's memfd).
 */
export function ioctlRaw(fd: number, request: number, arg: bigint | number | Uint8Array = 0n, extraFds: number[] = []): IoctlResult {
  let data: Buffer | undefined;
  let scalar = 0n;
  if (arg instanceof Uint8Array) data = Buffer.from(arg.buffer, arg.byteOffset, arg.byteLength);
  else scalar = BigInt(arg);
  const attach: number[] = [];
  const addFd = (n: number) => {
    if (n >= 0 && !attach.includes(n) && isOpen(n)) attach.push(n);
  };
  extraFds.forEach(addFd);
  const fields = FD_FIELDS[request >>> 0];
  if (fields && data) {
    for (const off of fields) if (off + 4 <= data.length) addFd(data.readInt32LE(off));
  }
  return ioctlMessage(fd, encodeRequest({ request, arg: scalar, data, fdNumbers: attach }), attach);
}

/** Send an already-encoded request and wait for its reply (the hot path of KVM_RUN). */
export function ioctlMessage(fd: number, message: Uint8Array, attach: number[] = []): IoctlResult {
  try {
    sendMessage(fd, message, attach);
  } catch (e) {
    return deadPeer(e);
  }
  return ioctlAwaitReply(fd);
}

/** The second half of an ioctl round trip, for callers that send first and wait later (kick tests). */
export function ioctlAwaitReply(fd: number): IoctlResult {
  let msg;
  try {
    msg = receiveMessage(fd);
  } catch (e) {
    return deadPeer(e);
  }
  if (!msg) return { ret: -1, errno: EIO, data: Buffer.alloc(0), detail: 'kernel-model closed the fd (VM destroyed?)', fds: [] };
  if (msg.truncated) return { ret: -1, errno: EIO, data: Buffer.alloc(0), detail: 'oversized reply from kernel-model', fds: [] };
  let reply: IoctlReply;
  try {
    reply = decodeReply(msg.data);
  } catch {
    msg.fds.forEach(closeQuietly);
    return { ret: -1, errno: EIO, data: Buffer.alloc(0), detail: 'malformed reply from kernel-model', fds: [] };
  }
  if (msg.fds.length && reply.ret >= 0) reply.ret = msg.fds[0];
  return { ...reply, fds: msg.fds };
}

function deadPeer(e: unknown): IoctlResult {
  if (e instanceof SyscallError && e.errno === EMSGSIZE) {
    return { ret: -1, errno: E2BIG, data: Buffer.alloc(0), detail: `ioctl message over ${MAX_MESSAGE} bytes`, fds: [] };
  }
  if (e instanceof SyscallError && (e.errno === EPIPE || e.errno === ECONNRESET)) {
    return { ret: -1, errno: EIO, data: Buffer.alloc(0), detail: 'kernel-model is gone (VM destroyed?)', fds: [] };
  }
  if (e instanceof SyscallError && e.errno === EBADF) {
    return { ret: -1, errno: EBADF, data: Buffer.alloc(0), detail: 'not an open fd', fds: [] };
  }
  throw e;
}
