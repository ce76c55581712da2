// What a control-plane campaign observes of a kernel-model: an ioctl round trip bounded in time,
// whether the process is still alive, the fds it holds, and the processes left behind.

import * as fs from 'node:fs';
import { decodeReply, IoctlResult } from '../../proto/control';
import { EIO } from '../../proto/errno';
import { IOEVENTFD, IOREGION, IRQFD, KVM_IOEVENTFD, KVM_IRQFD, KVM_SET_IOREGION } from '../../proto/kvm-uapi';
import { SyscallError } from '../../proto/errors';
import { closeQuietly, MSG_DONTWAIT, PollSet, POLLIN, receiveMessage, sendMessage, sendRaw } from '../../proto/os';

const poll = new PollSet(1);

/** How a bounded ioctl ended: the reply, or no reply in time, or the send itself could not happen. */
export type Outcome = { kind: 'reply'; r: IoctlResult } | { kind: 'hang'; what: string } | { kind: 'gone'; what: string };

/**
 * Send one control message (encoded, or raw bytes the client library would never produce) and wait
 * at most `timeoutMs` for its reply. Never blocks past the bound: the send does not wait for room,
 * the receive waits in poll(2). fds that come back are the caller's (result.fds).
 */
export function boundedIoctl(fd: number, message: Uint8Array, attach: readonly number[], timeoutMs: number): Outcome {
  try {
    if (attach.length) {
      sendMessage(fd, message, attach, MSG_DONTWAIT);
    } else {
      const n = sendRaw(fd, message, message.length, MSG_DONTWAIT);
      if (n < 0) throw new SyscallError('send', -n);
    }
  } catch (e) {
    const errno = (e as SyscallError).errno;
    // EAGAIN: a full socket buffer, the server stopped reading; anything else: the peer is gone.
    if (errno === 11) return { kind: 'hang', what: 'no room to send (the server stopped reading)' };
    return { kind: 'gone', what: `send failed: ${(e as Error).message}` };
  }
  poll.set(0, fd, POLLIN);
  if (poll.wait(1, timeoutMs) === 0) return { kind: 'hang', what: `no reply within ${timeoutMs} ms` };
  const msg = receiveMessage(fd, MSG_DONTWAIT);
  if (msg === undefined) return { kind: 'hang', what: 'readable but no message' };
  if (msg === null) return { kind: 'gone', what: 'the kernel-model closed the fd' };
  try {
    const reply = decodeReply(msg.data);
    if (msg.fds.length && reply.ret >= 0) reply.ret = msg.fds[0];
    return { kind: 'reply', r: { ...reply, fds: msg.fds } };
  } catch {
    msg.fds.forEach(closeQuietly);
    return { kind: 'reply', r: { ret: -1, errno: EIO, data: Buffer.alloc(0), detail: `malformed reply (${msg.data.length} bytes)`, fds: [] } };
  }
}

/** The fds a struct names in its fd fields and `open` holds: what the client library attaches. */
export function structFds(request: number, data: Buffer, open: Set<number>): number[] {
  const offsets = request === KVM_IOEVENTFD ? [IOEVENTFD.fd] : request === KVM_SET_IOREGION ? [IOREGION.read_fd, IOREGION.write_fd]
    : request === KVM_IRQFD ? [IRQFD.fd, IRQFD.resamplefd] : [];
  const out: number[] = [];
  for (const off of offsets) {
    if (off + 4 > data.length) continue;
    const n = data.readInt32LE(off);
    if (open.has(n) && !out.includes(n)) out.push(n);
  }
  return out;
}

/** True while `pid` runs (not gone, not a zombie waiting for us to reap it). */
export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}

/** The fds of process `pid` with what they point at, or undefined when /proc does not let us look. */
export function fdsOf(pid: number): Map<string, string> | undefined {
  try {
    const out = new Map<string, string>();
    for (const n of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        out.set(n, fs.readlinkSync(`/proc/${pid}/fd/${n}`));
      } catch {
        // Closed while we looked.
      }
    }
    return out;
  } catch {
    return undefined;
  }
}

/** What `now` holds that `before` did not, as 'fd -> target' lines (for an example). */
export function newFds(before: Map<string, string>, now: Map<string, string>): string[] {
  return [...now].filter(([n, t]) => before.get(n) !== t).map(([n, t]) => `${n} -> ${t}`);
}

/** Live child processes of this process (a kernel-model or device task someone forgot). */
export function childProcesses(): number[] {
  const me = String(process.pid);
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[1] === me && fields[0] !== 'Z') out.push(Number(d));
    } catch {
      // Gone while we looked.
    }
  }
  return out;
}

/** Wait (sleeping, blocking) until `done()` or `ms` passed; returns done(). */
export function waitFor(done: () => boolean, ms: number): boolean {
  const deadline = Date.now() + ms;
  const cell = new Int32Array(new SharedArrayBuffer(4));
  while (!done()) {
    if (Date.now() >= deadline) return false;
    Atomics.wait(cell, 0, 0, 10);
  }
  return true;
}
