// What a device task checks of the fds its manifest names before it uses any of them. The manifest
// comes from whoever started the task; a wrong one must end the task with a message (exit 2), never
// with SIGBUS at the first DMA, an exception, or one of Node's own fds closed under it.

import type { DeviceTaskManifest } from '../../proto/device-task-manifest';
import { PAGE_SIZE } from '../../proto/kvm-uapi';
import { closeOnExec, fdKind, fileSize, setCloseOnExec, socketType } from '../../proto/os';

/**
 * Throws an Error naming the manifest field when an fd is not what it must be:
 * - passed to the task: the fds a manifest names are exactly 3, 4, ..., 2 + n (the spawner passes
 *   them at those numbers, and the runtime's own fds come after them), each open;
 * - of the right kind: a channel's fds a socket of its transport (or a pipe / FIFO), an eventfd an
 *   eventfd, guest memory a memfd or file holding [offset, offset + size), offset page aligned.
 * Nothing is closed on the way: a wrong manifest must not take one of the runtime's fds with it.
 * On success the fds are marked close-on-exec, so they never leak into programs the task starts.
 */
export function checkManifestFds(m: DeviceTaskManifest): void {
  const numbers = [
    ...m.channels.flatMap((c) => [c.cmd_fd, c.resp_fd]), ...m.memory.map((r) => r.fd), ...Object.values(m.eventfds),
    ...(m.lifeline_fd === undefined ? [] : [m.lifeline_fd]),
  ];
  const distinct = [...new Set(numbers)].sort((a, b) => a - b);
  if (distinct.some((fd, i) => fd !== 3 + i)) {
    throw new Error(`manifest: the fds it names must be 3, 4, ... with no gap (a spawner passes them at exactly those numbers), got ${distinct.join(', ')}`);
  }
  const named: [number, string][] = [];
  const open = (fd: number, what: string): void => {
    if (closeOnExec(fd) === undefined) throw new Error(`manifest: ${what} ${fd} is not an open fd`);
    named.push([fd, what]);
  };
  m.channels.forEach((ch, i) => {
    for (const [fd, what] of [[ch.cmd_fd, `channels[${i}].cmd_fd`], [ch.resp_fd, `channels[${i}].resp_fd`]] as const) {
      open(fd, what);
      const type = socketType(fd);
      const kind = fdKind(fd);
      const fits = ch.transport === 'pipe' ? type === undefined && (kind === 'pipe' || kind === 'file') : type === ch.transport;
      if (!fits) throw new Error(`manifest: ${what} ${fd} is a ${type ? `${type} socket` : kind}, not a ${ch.transport === 'pipe' ? 'pipe' : `${ch.transport} socket`}`);
    }
  });
  m.memory.forEach((r, i) => {
    const what = `memory[${i}]`;
    open(r.fd, `${what}.fd`);
    const kind = fdKind(r.fd);
    if (kind !== 'memfd' && kind !== 'file') throw new Error(`manifest: ${what}.fd ${r.fd} is a ${kind}, not a memfd`);
    if (r.size === 0n || r.size > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`manifest: ${what}.size 0x${r.size.toString(16)} is not a usable size`);
    if (r.offset % BigInt(PAGE_SIZE)) throw new Error(`manifest: ${what}.offset 0x${r.offset.toString(16)} is not page aligned`);
    const have = BigInt(fileSize(r.fd));
    if (r.offset + r.size > have) {
      throw new Error(`manifest: ${what} [0x${r.offset.toString(16)}, +0x${r.size.toString(16)}) is past the end of its memfd (0x${have.toString(16)} bytes)`);
    }
  });
  for (const [name, fd] of Object.entries(m.eventfds)) {
    open(fd, `eventfds.${name}`);
    if (fdKind(fd) !== 'eventfd') throw new Error(`manifest: eventfds.${name} ${fd} is a ${fdKind(fd)}, not an eventfd`);
  }
  if (m.lifeline_fd !== undefined) open(m.lifeline_fd, 'lifeline_fd');
  for (const [fd] of named) setCloseOnExec(fd);
}
