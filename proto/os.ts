// The OS primitives every role needs (sockets with SCM_RIGHTS, eventfd, memfd + mmap, poll), over koffi.
//
// Failures surface as SyscallError with the errno; nothing here throws anything else for an OS error.
// Each thread that loads this module gets its own native scratch block for msghdr building, so the
// functions are safe to call from the kernel-model's vCPU worker threads.

import * as fs from 'fs';
import koffi from 'koffi';
import { EAGAIN, EINTR, EINVAL, EMSGSIZE } from './errno';
import { SyscallError } from './errors';

const libc = koffi.load('libc.so.6');

const c = {
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  sendmsg: libc.func('long sendmsg(int fd, void *msg, int flags)'),
  recvmsg: libc.func('long recvmsg(int fd, void *msg, int flags)'),
  sendmmsg: libc.func('int sendmmsg(int fd, void *msgvec, unsigned int vlen, int flags)'),
  recvmmsg: libc.func('int recvmmsg(int fd, void *msgvec, unsigned int vlen, int flags, void *timeout)'),
  read: libc.func('long read(int fd, void *buf, size_t count)'),
  write: libc.func('long write(int fd, const void *buf, size_t count)'),
  recv: libc.func('long recv(int fd, void *buf, size_t len, int flags)'),
  send: libc.func('long send(int fd, const void *buf, size_t len, int flags)'),
  close: libc.func('int close(int fd)'),
  shutdown: libc.func('int shutdown(int fd, int how)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  memfd_create: libc.func('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: libc.func('int ftruncate(int fd, long length)'),
  fallocate: libc.func('int fallocate(int fd, int mode, long offset, long len)'),
  mmap: libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)'),
  munmap: libc.func('int munmap(void *addr, size_t length)'),
  poll: libc.func('int poll(void *fds, unsigned long nfds, int timeout)'),
  pipe2: libc.func('int pipe2(_Out_ int *fds, int flags)'),
  syscall5: libc.func('long syscall(long number, long a, long b, long c, long d, long e)'),
  prctl: libc.func('int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)'),
  getppid: libc.func('int getppid(void)'),
  getpid: libc.func('int getpid(void)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, _Out_ int *value, _Inout_ uint32_t *len)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  getsockname: libc.func('int getsockname(int fd, void *addr, _Inout_ uint32_t *len)'),
  getpeername: libc.func('int getpeername(int fd, void *addr, _Inout_ uint32_t *len)'),
  sigaction: libc.func('int sigaction(int sig, const void *act, void *oldact)'),
  dlsym: libc.func('void *dlsym(void *handle, const char *name)'),
  sched_setaffinity: libc.func('int sched_setaffinity(int pid, size_t size, const uint8_t *mask)'),
  sched_getaffinity: libc.func('int sched_getaffinity(int pid, size_t size, _Out_ uint8_t *mask)'),
};

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_SEQPACKET = 5;
export const SOCK_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const EFD_SEMAPHORE = 1;
export const MFD_CLOEXEC = 1;
export const MFD_ALLOW_SEALING = 2;
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const O_ACCMODE = 3;
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;
export const POLLRDHUP = 0x2000;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const SHUT_RDWR = 2;
const MSG_TRUNC = 0x20;
const MSG_WAITFORONE = 0x10000;
const MSG_CTRUNC = 0x8;
const MSG_CMSG_CLOEXEC = 0x40000000;
const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
const F_GETFL = 3;
const F_SETFL = 4;
const F_DUPFD_CLOEXEC = 1030;
const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
const MAP_SHARED = 1;
const MAP_FAILED = 0xffffffffffffffffn;
const SYS_kcmp = 312;
const KCMP_FILE = 0;
const PR_SET_PDEATHSIG = 1;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
/** The kernel's SCM_MAX_FD: at most this many fds travel in one message. */
export const SCM_MAX_FD = 253;
/** Largest control-plane message we send or accept. */
export const MAX_MESSAGE = 64 * 1024;

function fail(syscall: string): never {
  throw new SyscallError(syscall, koffi.errno());
}

/** Run a syscall wrapper again while it fails with EINTR. */
function retry(fn: () => number | bigint): number {
  for (;;) {
    const r = Number(fn());
    if (r !== -1 || koffi.errno() !== EINTR) return r;
  }
}

// Native scratch block for sendmsg/recvmsg: msghdr @0, iovec @64, control @128, payload @2048.
const SCRATCH_MSGHDR = 0;
const SCRATCH_IOV = 64;
const SCRATCH_CONTROL = 128;
const SCRATCH_DATA = 2048;
const CONTROL_CAPACITY = SCRATCH_DATA - SCRATCH_CONTROL;
const scratchAddr: bigint = koffi.alloc('uint8', SCRATCH_DATA + MAX_MESSAGE) as bigint;
const scratch = new DataView(koffi.view(scratchAddr, SCRATCH_DATA + MAX_MESSAGE));
const scratchBytes = new Uint8Array(scratch.buffer);

function cmsgSpace(nfds: number): number {
  return 16 + ((nfds * 4 + 7) & ~7);
}

function fillMsghdr(len: number, controlLen: number): void {
  scratch.setBigUint64(SCRATCH_MSGHDR + 0, 0n, true); // msg_name
  scratch.setUint32(SCRATCH_MSGHDR + 8, 0, true); // msg_namelen
  scratch.setBigUint64(SCRATCH_MSGHDR + 16, scratchAddr + BigInt(SCRATCH_IOV), true); // msg_iov
  scratch.setBigUint64(SCRATCH_MSGHDR + 24, 1n, true); // msg_iovlen
  scratch.setBigUint64(SCRATCH_MSGHDR + 32, controlLen ? scratchAddr + BigInt(SCRATCH_CONTROL) : 0n, true);
  scratch.setBigUint64(SCRATCH_MSGHDR + 40, BigInt(controlLen), true); // msg_controllen
  scratch.setInt32(SCRATCH_MSGHDR + 48, 0, true); // msg_flags
  scratch.setBigUint64(SCRATCH_IOV + 0, scratchAddr + BigInt(SCRATCH_DATA), true);
  scratch.setBigUint64(SCRATCH_IOV + 8, BigInt(len), true);
}

/** socketpair(AF_UNIX, type | SOCK_CLOEXEC): both ends blocking. */
export function socketpair(type: 'seqpacket' | 'stream'): [number, number] {
  const sv = [0, 0];
  const t = (type === 'seqpacket' ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC;
  if (c.socketpair(AF_UNIX, t, 0, sv) !== 0) fail('socketpair');
  return [sv[0], sv[1]];
}

/** pipe2(O_CLOEXEC): [read end, write end], both blocking. */
export function pipe(): [number, number] {
  const fds = [0, 0];
  if (c.pipe2(fds, O_CLOEXEC) !== 0) fail('pipe2');
  return [fds[0], fds[1]];
}

/** sendmsg() one message with optional SCM_RIGHTS fds; MSG_NOSIGNAL, so a dead peer is EPIPE, not SIGPIPE. */
export function sendMessage(fd: number, data: Uint8Array, fds: readonly number[] = [], flags = 0): void {
  if (data.length > MAX_MESSAGE) throw new SyscallError('sendmsg', EMSGSIZE);
  if (fds.length > SCM_MAX_FD) throw new SyscallError('sendmsg', EMSGSIZE);
  scratchBytes.set(data, SCRATCH_DATA);
  let controlLen = 0;
  if (fds.length) {
    controlLen = cmsgSpace(fds.length);
    scratch.setBigUint64(SCRATCH_CONTROL + 0, BigInt(16 + 4 * fds.length), true); // cmsg_len
    scratch.setInt32(SCRATCH_CONTROL + 8, SOL_SOCKET, true);
    scratch.setInt32(SCRATCH_CONTROL + 12, SCM_RIGHTS, true);
    fds.forEach((f, i) => scratch.setInt32(SCRATCH_CONTROL + 16 + 4 * i, f, true));
  }
  fillMsghdr(data.length, controlLen);
  const r = retry(() => c.sendmsg(fd, scratchAddr + BigInt(SCRATCH_MSGHDR), flags | MSG_NOSIGNAL));
  if (r < 0) fail('sendmsg');
  if (r !== data.length) throw new SyscallError('sendmsg (short)', 5 /* EIO */);
}

export interface ReceivedMessage {
  data: Buffer;
  fds: number[];
  /**
   * The message was longer than MAX_MESSAGE or carried more fds than fit: the rest was discarded by
   * the kernel, `data` is empty and every fd that did arrive is already closed. The socket stays in
   * step (a SEQPACKET read consumes the whole record), so the receiver can answer and go on.
   */
  truncated?: boolean;
}

/**
 * recvmsg() one message and any SCM_RIGHTS fds (received close-on-exec). Returns null at EOF and,
 * with MSG_DONTWAIT, undefined when nothing is waiting. A zero-length SEQPACKET record is a message,
 * not EOF: recvmsg returns 0 for both, so a 0 is EOF only when the peer has hung up. A truncated
 * message comes back with `truncated` set (see ReceivedMessage).
 */
export function receiveMessage(fd: number, flags = 0): ReceivedMessage | null | undefined {
  const m = receive(fd, flags, false);
  return m === 'interrupted' ? undefined : m;
}

/**
 * receiveMessage blocking in recvmsg(2) itself, but ended by a signal (see installWakeSignal):
 * 'interrupted' then, so the caller can look at why it was woken and call again.
 */
export function receiveMessageWakeable(fd: number): ReceivedMessage | null | 'interrupted' {
  const m = receive(fd, 0, true);
  return m === undefined ? 'interrupted' : m;
}

function receive(fd: number, flags: number, wakeable: boolean): ReceivedMessage | null | undefined | 'interrupted' {
  fillMsghdr(MAX_MESSAGE, CONTROL_CAPACITY);
  const call = () => c.recvmsg(fd, scratchAddr + BigInt(SCRATCH_MSGHDR), flags | MSG_CMSG_CLOEXEC);
  const r = wakeable ? Number(call()) : retry(call);
  if (r < 0) {
    const e = koffi.errno();
    if (e === EAGAIN && flags & MSG_DONTWAIT) return undefined;
    if (e === EINTR && wakeable) return 'interrupted';
    fail('recvmsg');
  }
  const fds: number[] = [];
  const controlLen = Number(scratch.getBigUint64(SCRATCH_MSGHDR + 40, true));
  let off = 0;
  while (off + 16 <= controlLen) {
    const len = Number(scratch.getBigUint64(SCRATCH_CONTROL + off, true));
    if (len < 16) break;
    const level = scratch.getInt32(SCRATCH_CONTROL + off + 8, true);
    const type = scratch.getInt32(SCRATCH_CONTROL + off + 12, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let p = 16; p + 4 <= len; p += 4) fds.push(scratch.getInt32(SCRATCH_CONTROL + off + p, true));
    }
    off += (len + 7) & ~7;
  }
  const msgFlags = scratch.getInt32(SCRATCH_MSGHDR + 48, true);
  if (msgFlags & (MSG_TRUNC | MSG_CTRUNC)) {
    fds.forEach((f) => c.close(f));
    return { data: Buffer.alloc(0), fds: [], truncated: true };
  }
  if (r === 0 && fds.length === 0 && peerHungUp(fd)) return null;
  return { data: Buffer.from(scratchBytes.subarray(SCRATCH_DATA, SCRATCH_DATA + r)), fds };
}

const hangupPoll = Buffer.alloc(8);

/** poll(2) with timeout 0: has the peer of a socket hung up (POLLHUP / POLLRDHUP)? */
function peerHungUp(fd: number): boolean {
  hangupPoll.writeInt32LE(fd, 0);
  hangupPoll.writeInt16LE(POLLRDHUP, 4);
  hangupPoll.writeInt16LE(0, 6);
  if (retry(() => c.poll(hangupPoll, 1, 0)) < 0) return true;
  return (hangupPoll.readInt16LE(6) & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) !== 0;
}

/** read(2) into buf[off..off+len); returns bytes read (0 = EOF). Throws on error, EAGAIN included. */
export function read(fd: number, buf: Uint8Array, off = 0, len = buf.length - off): number {
  const r = retry(() => c.read(fd, off ? buf.subarray(off, off + len) : buf, len));
  if (r < 0) fail('read');
  return r;
}

/** write(2) from buf[off..off+len); returns bytes written. Throws on error, EAGAIN and EPIPE included. */
export function write(fd: number, buf: Uint8Array, off = 0, len = buf.length - off): number {
  const r = retry(() => c.write(fd, off ? buf.subarray(off, off + len) : buf, len));
  if (r < 0) fail('write');
  return r;
}

/**
 * read(2) that a signal can interrupt: n >= 0, or -errno, -EINTR included (see installWakeSignal).
 * Used where a thread must block in the read itself yet stay wakeable.
 */
export function readInterruptible(fd: number, buf: Uint8Array, len = buf.length): number {
  const r = Number(c.read(fd, buf, len));
  return r >= 0 ? r : -koffi.errno();
}

/** poll(2) on no fds: sleep until a signal (EINTR) or the timeout. */
export function sleepUntilSignal(timeoutMs: number): void {
  c.poll(null, 0, timeoutMs);
}

/** The kernel thread id of the calling thread (gettid). */
export function gettid(): number {
  return Number(c.syscall5(186 /* SYS_gettid */, 0, 0, 0, 0, 0));
}

/** The largest CPU number a mask may name (glibc's CPU_SETSIZE). */
export const CPU_SETSIZE = 1024;

/** A cpu_set_t-style mask (bit n of byte n / 8) naming these CPUs; undefined for a number out of range. */
export function cpuMask(cpus: readonly number[]): Uint8Array | undefined {
  const mask = new Uint8Array(CPU_SETSIZE / 8);
  for (const cpu of cpus) {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= CPU_SETSIZE) return undefined;
    mask[cpu >> 3] |= 1 << (cpu & 7);
  }
  return mask;
}

/**
 * sched_setaffinity(2) for a process or thread id (0: the calling thread): 0 or -errno. An empty
 * list, or a CPU at or past CPU_SETSIZE, is -EINVAL as the kernel answers an empty mask.
 */
export function setAffinity(tid: number, cpus: readonly number[]): number {
  const mask = cpuMask(cpus);
  if (!mask || cpus.length === 0) return -EINVAL;
  return c.sched_setaffinity(tid, mask.length, mask) === 0 ? 0 : -koffi.errno();
}

/** sched_getaffinity(2): the CPUs a process or thread (0: the calling thread) may run on. */
export function getAffinity(tid: number): number[] {
  const mask = new Uint8Array(CPU_SETSIZE / 8);
  if (c.sched_getaffinity(tid, mask.length, mask) < 0) throw new SyscallError('sched_getaffinity', koffi.errno());
  return cpusOfMask(mask);
}

/** The CPU numbers set in a cpu_set_t-style mask (bit n of byte n / 8). */
export function cpusOfMask(mask: Uint8Array): number[] {
  const cpus: number[] = [];
  mask.forEach((byte, i) => {
    for (let b = 0; b < 8; b++) if (byte & (1 << b)) cpus.push(8 * i + b);
  });
  return cpus;
}

/** tgkill(2): send `sig` to one thread of a process; false if it is gone. */
export function tgkill(pid: number, tid: number, sig: number): boolean {
  return Number(c.syscall5(234 /* SYS_tgkill */, pid, tid, sig, 0, 0)) === 0;
}

/** The real-time signal the kernel-model uses to wake a vCPU thread out of a blocking syscall. */
export const WAKE_SIGNAL = 45;

/**
 * Install WAKE_SIGNAL's process-wide handler: a no-op (libc's abs(), a pure function, is a valid
 * async-signal-safe handler: JS can never run in signal context) WITHOUT SA_RESTART, so a blocking
 * read(2) or poll(2) in the signalled thread returns EINTR. Idempotent.
 */
export function installWakeSignal(): void {
  const handler = c.dlsym(null, 'abs') as bigint;
  if (!handler) throw new SyscallError('dlsym(abs)', 2);
  // glibc struct sigaction (x86-64): handler @0, sa_mask @8 (128 bytes), sa_flags @136, restorer @144.
  const act = Buffer.alloc(152);
  act.writeBigUInt64LE(handler, 0);
  if (c.sigaction(WAKE_SIGNAL, act, null) !== 0) fail('sigaction');
}

/**
 * The raw result of read(2)/write(2) with errno, for hot paths that branch on EAGAIN/EPIPE without the
 * cost of an exception: returns n >= 0, or -errno.
 */
export function readRaw(fd: number, buf: Uint8Array, len = buf.length): number {
  for (;;) {
    const r = Number(c.read(fd, buf, len));
    if (r >= 0) return r;
    const e = koffi.errno();
    if (e !== EINTR) return -e;
  }
}

/** recv(2) with flags: n >= 0, or -errno. */
export function recvRaw(fd: number, buf: Uint8Array, len = buf.length, flags = 0): number {
  for (;;) {
    const r = Number(c.recv(fd, buf, len, flags));
    if (r >= 0) return r;
    const e = koffi.errno();
    if (e !== EINTR) return -e;
  }
}

/** send(2) with flags (MSG_NOSIGNAL always added): n >= 0, or -errno. */
export function sendRaw(fd: number, buf: Uint8Array, len = buf.length, flags = 0): number {
  for (;;) {
    const r = Number(c.send(fd, buf, len, flags | MSG_NOSIGNAL));
    if (r >= 0) return r;
    const e = koffi.errno();
    if (e !== EINTR) return -e;
  }
}

/** See readRaw. Uses send(MSG_NOSIGNAL) on sockets so a dead peer gives -EPIPE rather than SIGPIPE. */
export function writeRaw(fd: number, buf: Uint8Array, len = buf.length, isSocket = false): number {
  for (;;) {
    const r = Number(isSocket ? c.send(fd, buf, len, MSG_NOSIGNAL) : c.write(fd, buf, len));
    if (r >= 0) return r;
    const e = koffi.errno();
    if (e !== EINTR) return -e;
  }
}

/** close(2); closing an fd that is already closed is reported, not ignored. */
export function close(fd: number): void {
  if (c.close(fd) !== 0) fail('close');
}

/** close(2) ignoring errors: for cleanup paths where the fd may already be gone. */
export function closeQuietly(fd: number): void {
  if (fd >= 0) c.close(fd);
}

/** shutdown(fd, SHUT_RDWR): wakes any thread blocked reading the socket (read returns 0). */
export function shutdown(fd: number): void {
  c.shutdown(fd, SHUT_RDWR);
}

/** True when fd is an open descriptor in this process. */
export function isOpen(fd: number): boolean {
  return fd >= 0 && c.fcntl(fd, F_GETFD, 0) >= 0;
}

/** The FD_CLOEXEC flag of an fd, or undefined for an fd that is not open. */
export function closeOnExec(fd: number): boolean | undefined {
  const r = fd >= 0 ? c.fcntl(fd, F_GETFD, 0) : -1;
  return r < 0 ? undefined : (r & FD_CLOEXEC) !== 0;
}

/** Set FD_CLOEXEC: the fd no longer passes to programs this process starts. */
export function setCloseOnExec(fd: number): void {
  const r = c.fcntl(fd, F_GETFD, 0);
  if (r < 0 || c.fcntl(fd, F_SETFD, r | FD_CLOEXEC) < 0) fail('fcntl(F_SETFD)');
}

/** fcntl(F_DUPFD_CLOEXEC): a second descriptor for the same open file description. */
export function dup(fd: number): number {
  const r = c.fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (r < 0) fail('fcntl(F_DUPFD_CLOEXEC)');
  return r;
}

/** The file status flags (O_NONBLOCK etc.); -errno on failure, for the hot path. */
export function getStatusFlags(fd: number): number {
  const r = c.fcntl(fd, F_GETFL, 0);
  return r < 0 ? -koffi.errno() : r;
}

/** Set or clear O_NONBLOCK on the open file description (shared by every dup and SCM_RIGHTS copy). */
export function setNonBlocking(fd: number, on: boolean): void {
  const flags = c.fcntl(fd, F_GETFL, 0);
  if (flags < 0) fail('fcntl(F_GETFL)');
  if (c.fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) < 0) fail('fcntl(F_SETFL)');
}

/** eventfd(2), close-on-exec. */
export function eventfd(initval = 0, flags = 0): number {
  const r = c.eventfd(initval, flags | EFD_CLOEXEC);
  if (r < 0) fail('eventfd');
  return r;
}

const counterBuf = new BigUint64Array(1);
const counterBytes = new Uint8Array(counterBuf.buffer);

/** Add n to an eventfd counter (a write of 8 bytes). */
export function eventfdWrite(fd: number, n = 1n): void {
  counterBuf[0] = n;
  const r = retry(() => c.write(fd, counterBytes, 8));
  if (r < 0) fail('write(eventfd)');
}

/** Read and reset an eventfd counter; undefined when it is zero and the fd is non-blocking. */
export function eventfdRead(fd: number): bigint | undefined {
  const r = retry(() => c.read(fd, counterBytes, 8));
  if (r < 0) {
    if (koffi.errno() === EAGAIN) return undefined;
    fail('read(eventfd)');
  }
  return counterBuf[0];
}

/**
 * memfd_create(2) + ftruncate(2): anonymous shared memory of `size` bytes. Created with
 * MFD_ALLOW_SEALING, so whoever must rely on its size (the kernel-model, for guest RAM) can seal it.
 */
export function memfd(name: string, size: number | bigint): number {
  const fd = c.memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) fail('memfd_create');
  if (c.ftruncate(fd, BigInt(size)) !== 0) {
    const e = koffi.errno();
    c.close(fd);
    throw new SyscallError('ftruncate', e);
  }
  return fd;
}

/** ftruncate(2): 0, or -errno (EPERM for a memfd sealed against this change). */
export function resizeFile(fd: number, size: number | bigint): number {
  return c.ftruncate(fd, BigInt(size)) === 0 ? 0 : -koffi.errno();
}

/** fcntl(F_ADD_SEALS): add seals to a memfd; -errno on failure (EPERM once F_SEAL_SEAL is set, EINVAL for other files). */
export function addSeals(fd: number, seals: number): number {
  return c.fcntl(fd, F_ADD_SEALS, seals) < 0 ? -koffi.errno() : 0;
}

/** fcntl(F_GET_SEALS): the seals of a memfd, or -errno (EINVAL for a file that is not a memfd). */
export function getSeals(fd: number): number {
  const r = c.fcntl(fd, F_GET_SEALS, 0);
  return r < 0 ? -koffi.errno() : r;
}

/** Native memory of a MessageBatch, freed once nothing can reach the buffer that views it. */
const freeWithBuffer = new FinalizationRegistry<bigint>((addr) => koffi.free(addr));

/**
 * Fixed-size messages in native memory, sent or received several per system call (sendmmsg(2),
 * recvmmsg(2)): one SEQPACKET record per message. `bytes` views the messages back to back. The
 * memory is freed after the batch and its views are garbage (a posted ioregion makes one per vCPU).
 */
export class MessageBatch {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  private readonly base: bigint;
  private readonly hdrs: DataView;
  private readonly hdrBase: bigint;

  constructor(readonly capacity: number, readonly messageSize: number) {
    // struct mmsghdr: msghdr (56 bytes) + msg_len (u32), padded to 64; then one iovec (16 bytes) each.
    const hdrBytes = capacity * (64 + 16);
    this.hdrBase = koffi.alloc('uint8', hdrBytes) as bigint;
    this.hdrs = new DataView(koffi.view(this.hdrBase, hdrBytes));
    new Uint8Array(this.hdrs.buffer).fill(0);
    this.base = koffi.alloc('uint8', capacity * messageSize) as bigint;
    const data = koffi.view(this.base, capacity * messageSize);
    this.bytes = new Uint8Array(data);
    this.view = new DataView(data);
    freeWithBuffer.register(this.hdrs.buffer, this.hdrBase);
    freeWithBuffer.register(data, this.base);
    for (let i = 0; i < capacity; i++) {
      const h = 64 * i;
      const iov = 64 * capacity + 16 * i;
      this.hdrs.setBigUint64(h + 16, this.hdrBase + BigInt(iov), true); // msg_iov
      this.hdrs.setBigUint64(h + 24, 1n, true); // msg_iovlen
      this.hdrs.setBigUint64(iov, this.base + BigInt(i * messageSize), true);
      this.hdrs.setBigUint64(iov + 8, BigInt(messageSize), true);
    }
  }

  /** sendmmsg() messages [from, from + count): the number sent (>= 1), or -errno. MSG_NOSIGNAL added. */
  send(fd: number, from: number, count: number, flags = 0): number {
    const r = c.sendmmsg(fd, this.hdrBase + BigInt(64 * from), count, flags | MSG_NOSIGNAL);
    return r < 0 ? -koffi.errno() : r;
  }

  /** recvmmsg() up to `max` messages: the number received (0 at EOF), or -errno; see length(). */
  receive(fd: number, max = this.capacity, flags = 0): number {
    for (let i = 0; i < max; i++) this.hdrs.setInt32(64 * i + 48, 0, true);
    // MSG_WAITFORONE: block for the first message only, then take what is already queued.
    const r = c.recvmmsg(fd, this.hdrBase, max, flags | MSG_WAITFORONE, null);
    return r < 0 ? -koffi.errno() : r;
  }

  /** The length of received message i (a SEQPACKET record longer than messageSize is cut, flagged by MSG_TRUNC). */
  length(i: number): number {
    return this.hdrs.getUint32(64 * i + 56, true);
  }

  /** Whether received message i was longer than messageSize. */
  truncated(i: number): boolean {
    return (this.hdrs.getInt32(64 * i + 48, true) & MSG_TRUNC) !== 0;
  }
}

/** A MAP_SHARED mapping: its address and a zero-copy ArrayBuffer over it. */
export interface Mapping {
  addr: bigint;
  size: number;
  buffer: ArrayBuffer;
}

/** mmap(fd, offset, size, prot, MAP_SHARED); PROT_READ|PROT_WRITE unless told otherwise. */
export function mapShared(fd: number, size: number, offset: number | bigint = 0, prot = PROT_READ | PROT_WRITE): Mapping {
  const addr = c.mmap(null, size, prot, MAP_SHARED, fd, BigInt(offset)) as bigint;
  if (addr === MAP_FAILED || addr === -1n) fail('mmap');
  return { addr, size, buffer: koffi.view(addr, size) };
}

/**
 * Whether mmap(fd, offset, size, prot, MAP_SHARED) would succeed: maps and unmaps at once, without
 * making a view (which is what makes mapShared costly). 0, or the errno.
 */
export function probeMap(fd: number, size: number, offset: number | bigint, prot: number): number {
  const addr = c.mmap(null, size, prot, MAP_SHARED, fd, BigInt(offset)) as bigint;
  if (addr === MAP_FAILED || addr === -1n) return koffi.errno();
  c.munmap(addr, size);
  return 0;
}

const unmapLater = new FinalizationRegistry<{ addr: bigint; size: number }>((m) => c.munmap(m.addr, m.size));

/**
 * Give up a mapping whose ArrayBuffer callers may still hold (a VMM's views of guest memory): it is
 * unmapped once nothing can reach the buffer any more, so a late read sees stale bytes, never SIGSEGV.
 */
export function unmapWhenUnreachable(m: Mapping): void {
  unmapLater.register(m.buffer, { addr: m.addr, size: m.size });
}

/** munmap(2). The ArrayBuffer of the mapping must not be touched afterwards. */
export function unmap(m: Mapping): void {
  if (c.munmap(m.addr, m.size) !== 0) fail('munmap');
}

/** Size of the file behind fd (fstat st_size). */
export function fileSize(fd: number): number {
  return fs.fstatSync(fd).size;
}

/**
 * Reusable poll(2) set: fill fds/events, call wait(), read revents. Kept as a class so the hot path
 * allocates nothing.
 */
export class PollSet {
  private readonly buf: Buffer;
  private readonly view: DataView;
  constructor(readonly capacity: number) {
    this.buf = Buffer.alloc(8 * capacity);
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.length);
  }
  set(i: number, fd: number, events: number): void {
    this.view.setInt32(8 * i, fd, true);
    this.view.setInt16(8 * i + 4, events, true);
    this.view.setInt16(8 * i + 6, 0, true);
  }
  revents(i: number): number {
    return this.view.getInt16(8 * i + 6, true);
  }
  /** poll(2) that a signal ends: the number ready, 0 on timeout, or -errno (-EINTR). */
  waitInterruptible(n: number, timeoutMs: number): number {
    const r = c.poll(this.buf, n, timeoutMs);
    return r < 0 ? -koffi.errno() : r;
  }

  /** poll(2) on the first n entries; returns the number ready (0 on timeout). EINTR is retried. */
  wait(n: number, timeoutMs: number): number {
    const r = retry(() => c.poll(this.buf, n, timeoutMs));
    if (r < 0) fail('poll');
    return r;
  }
}

/** kcmp(KCMP_FILE): true when two fds of this process refer to the same open file description. */
export function sameFile(a: number, b: number): boolean {
  if (a === b) return true;
  const pid = c.getpid();
  const r = Number(c.syscall5(SYS_kcmp, pid, pid, KCMP_FILE, a, b));
  if (r < 0) fail('kcmp');
  return r === 0;
}

/** A socket's type (SO_TYPE): 'stream', 'seqpacket', 'dgram', or undefined for a non-socket. */
export function socketType(fd: number): 'stream' | 'seqpacket' | 'dgram' | undefined {
  const value = [0];
  const len = [4];
  if (c.getsockopt(fd, SOL_SOCKET, 3 /* SO_TYPE */, value, len) !== 0) return undefined;
  return value[0] === SOCK_STREAM ? 'stream' : value[0] === SOCK_SEQPACKET ? 'seqpacket' : value[0] === 2 ? 'dgram' : undefined;
}

const SOCKADDR_UN_SIZE = 110;

/**
 * Give an AF_UNIX socket (a socketpair end included) a name in the abstract namespace: `name` without
 * the leading NUL. Its peer then reports that name from getpeername(2), which is how a process can
 * recognise the other end of one of its own sockets when that end is handed back to it.
 */
export function bindAbstract(fd: number, name: string): void {
  const path = Buffer.from(name, 'utf8');
  if (path.length + 1 > SOCKADDR_UN_SIZE - 2) throw new SyscallError('bind (name too long)', 36 /* ENAMETOOLONG */);
  const addr = Buffer.alloc(2 + 1 + path.length);
  addr.writeUInt16LE(AF_UNIX, 0);
  path.copy(addr, 3);
  if (c.bind(fd, addr, addr.length) !== 0) fail('bind');
}

/**
 * The abstract name of an AF_UNIX socket (`self`) or of its peer, without the leading NUL; undefined
 * for an unnamed socket, a filesystem name, or an fd that is not a connected AF_UNIX socket.
 */
export function abstractName(fd: number, which: 'self' | 'peer'): string | undefined {
  const addr = Buffer.alloc(SOCKADDR_UN_SIZE);
  const len = [SOCKADDR_UN_SIZE];
  const r = which === 'self' ? c.getsockname(fd, addr, len) : c.getpeername(fd, addr, len);
  if (r !== 0 || len[0] <= 3 || addr.readUInt16LE(0) !== AF_UNIX || addr[2] !== 0) return undefined;
  return addr.subarray(3, Math.min(len[0], SOCKADDR_UN_SIZE)).toString('utf8');
}

/** What kind of file an fd is, from /proc/self/fd: 'eventfd', 'socket', 'pipe', 'memfd', 'file', ... */
export function fdKind(fd: number): string {
  let target: string;
  try {
    target = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return 'closed';
  }
  if (target === 'anon_inode:[eventfd]') return 'eventfd';
  if (target.startsWith('socket:')) return 'socket';
  if (target.startsWith('pipe:')) return 'pipe';
  if (target.startsWith('/memfd:')) return 'memfd';
  if (target.startsWith('anon_inode:')) return target.slice('anon_inode:'.length);
  return 'file';
}

/**
 * prctl(PR_SET_DUMPABLE): a non-dumpable process's /proc/<pid>/fd, mem and maps belong to root and
 * are closed to other processes of the same user (ptrace access mode checks), and it dumps no core.
 */
export function setDumpable(on: boolean): void {
  if (c.prctl(4 /* PR_SET_DUMPABLE */, on ? 1 : 0, 0, 0, 0) !== 0) fail('prctl(PR_SET_DUMPABLE)');
}

/**
 * Ask the kernel to SIGKILL this process when its parent dies, so a crashed VMM never leaves a
 * kernel-model or device task behind. Exits at once if the parent is already gone.
 */
export function dieWithParent(): void {
  const parent = c.getppid();
  c.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0);
  if (c.getppid() !== parent) process.exit(1);
}

/**
 * exit_group(2): end the whole process at once with `code`, from any thread, running no exit
 * handlers. For a worker thread that must end its process while the main thread sits in a syscall.
 */
export function exitProcessNow(code: number): never {
  c.syscall5(231 /* SYS_exit_group */, code, 0, 0, 0, 0);
  throw new Error('exit_group returned');
}

const FALLOC_FL_KEEP_SIZE = 1;
const FALLOC_FL_PUNCH_HOLE = 2;

/**
 * fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): give back a byte range of a file, which then
 * reads as zeros (a disk image's deallocate). Returns 0 or -errno (EOPNOTSUPP on file systems without it).
 */
export function punchHole(fd: number, offset: number, length: number): number {
  return c.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) === 0 ? 0 : -koffi.errno();
}
