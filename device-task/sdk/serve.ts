// The device task's main loop: read ioregionfd commands from each channel, call the model, answer
// when KVM waits for an answer; wake the model on its doorbell eventfds; stop cleanly at EOF.
//
// One channel and nothing else to watch: a read per command, spun non-blocking for up to `pollNs`
// (proto/spin-poll.ts), then blocking. Otherwise poll(2) over channels, doorbells and the lifeline,
// spun the same way with a zero timeout first. A command that lands while the task spins costs no
// wake-up. A peer that breaks the protocol
// (a frame that is not 32 bytes, an unknown command, a torn frame at EOF) gets a log line, and the
// task exits with EXIT_PROTOCOL: a device that cannot trust its command stream must not guess.

import type { ChannelSpec } from '../../proto/device-task-manifest';
import { EAGAIN, EPIPE, ECONNRESET, errnoName } from '../../proto/errno';
import { ProtocolError } from '../../proto/errors';
import {
  decodeCmdInto, encodeResp, IOREGIONFD_CMD_READ, IOREGIONFD_MSG_SIZE, IoregionfdCmd, truncateToSize, WireLayout,
} from '../../proto/ioregionfd-wire';
import { closeQuietly, eventfdRead, MessageBatch, MSG_DONTWAIT, PollSet, POLLERR, POLLHUP, POLLIN, POLLNVAL, readRaw, recvRaw, writeRaw } from '../../proto/os';
import { DEFAULT_POLL_NS, SpinPolicy } from '../../proto/spin-poll';
import { StreamFramer } from '../../proto/stream-framer';
import type { DeviceModel } from './device-model';

export const EXIT_OK = 0;
export const EXIT_INTERNAL = 1;
export const EXIT_PROTOCOL = 3;
/** SEQPACKET records taken per system call at most. */
const RECORD_BATCH = 16;

export interface ServeOptions {
  channels: ChannelSpec[];
  layout: WireLayout;
  /** Doorbell eventfds to watch: name -> fd. Readable means the guest rang; the model's onEventfd runs. */
  doorbells?: Map<string, number>;
  /** EOF on this fd ends the task (for tasks whose channels KVM may keep open). */
  lifelineFd?: number;
  /** How long to spin for the next command before blocking (ns; 0 = never). Default DEFAULT_POLL_NS. */
  pollNs?: number;
  log?: (message: string) => void;
}

class Violation extends Error {}

interface Channel {
  spec: ChannelSpec;
  open: boolean;
  framer: StreamFramer | undefined;
  isSocket: boolean;
  /** Stream/pipe bytes read and frames handled so far: their difference is what was read past this frame. */
  received: number;
  framed: number;
}

/** Serve a model until every channel closes (or the lifeline does); returns the exit code. */
export function serveDevice(model: DeviceModel, opts: ServeOptions): number {
  const log = opts.log ?? ((m: string) => process.stderr.write(`device-task: ${m}\n`));
  const layout = opts.layout;
  const cmd: IoregionfdCmd = { cmd: 0, size: 0, resp: false, userData: 0n, offset: 0n, data: 0n };
  const resp = new Uint8Array(IOREGIONFD_MSG_SIZE);
  const respView = new DataView(resp.buffer);
  const readBuf = new Uint8Array(64 * IOREGIONFD_MSG_SIZE);
  const records = new MessageBatch(RECORD_BATCH, IOREGIONFD_MSG_SIZE);
  let current: Channel;

  const channels: Channel[] = opts.channels.map((spec) => ({
    spec, open: true, isSocket: spec.transport !== 'pipe', framer: undefined, received: 0, framed: 0,
  }));
  const spinner = new SpinPolicy(opts.pollNs ?? DEFAULT_POLL_NS);
  const observeBacklog = model.observeBacklog?.bind(model);
  const backlogPoll = new PollSet(1);
  for (const ch of channels) {
    if (ch.spec.transport !== 'seqpacket') ch.framer = new StreamFramer((view, off) => handleFrame(view, off));
  }

  /** Whether more of the command stream is already waiting behind the frame being handled. */
  function backlogQueued(ch: Channel): boolean {
    if (ch.received > ch.framed * IOREGIONFD_MSG_SIZE) return true;
    backlogPoll.set(0, ch.spec.cmd_fd, POLLIN);
    return backlogPoll.wait(1, 0) > 0 && (backlogPoll.revents(0) & POLLIN) !== 0;
  }

  function handleFrame(view: DataView, off: number): void {
    current.framed++;
    try {
      decodeCmdInto(layout, view, off, cmd);
    } catch (e) {
      throw new Violation((e as ProtocolError).message);
    }
    if (observeBacklog && cmd.resp) observeBacklog(backlogQueued(current));
    let value = 0n;
    if (cmd.cmd === IOREGIONFD_CMD_READ) {
      if (!cmd.resp) throw new Violation(`READ at offset 0x${cmd.offset.toString(16)} without the resp bit`);
      // KVM keeps only the low `size` bytes; truncating here also keeps a sloppy model's value a u64.
      value = truncateToSize(model.read(cmd.offset, cmd.size, cmd.userData), cmd.size);
    } else {
      // The model is promised the guest's bytes zero-extended; a sloppy sender's upper bytes never reach it.
      model.write(cmd.offset, cmd.size, truncateToSize(cmd.data, cmd.size), cmd.userData);
    }
    if (cmd.resp) respond(value);
  }

  function respond(value: bigint): void {
    encodeResp(value, respView, 0);
    let done = 0;
    while (done < IOREGIONFD_MSG_SIZE) {
      const n = writeRaw(current.spec.resp_fd, done ? resp.subarray(done) : resp, IOREGIONFD_MSG_SIZE - done, current.isSocket);
      if (n < 0) {
        // KVM's side is gone (VM destroyed): nothing left to answer on this channel.
        if (-n === EPIPE || -n === ECONNRESET) return closeChannel(current);
        throw new Error(`writing a response: ${errnoName(-n)}`);
      }
      done += n;
    }
  }

  function closeChannel(ch: Channel): void {
    if (!ch.open) return;
    ch.open = false;
    closeQuietly(ch.spec.cmd_fd);
    if (ch.spec.resp_fd !== ch.spec.cmd_fd) closeQuietly(ch.spec.resp_fd);
  }

  /**
   * One read from a channel (several commands at once when they are queued); false at EOF. `spin`:
   * this read is the task's wait (one channel), so spin first; after poll(2) said ready, do not.
   */
  function pump(ch: Channel, spin: boolean): boolean {
    current = ch;
    if (ch.spec.transport === 'seqpacket') return pumpRecords(ch, spin);
    const fd = ch.spec.cmd_fd;
    let n = spin && ch.isSocket ? spinner.spin(() => recvRaw(fd, readBuf, readBuf.length, MSG_DONTWAIT)) : -EAGAIN;
    if (n === -EAGAIN) n = readRaw(fd, readBuf, readBuf.length);
    if (n < 0) {
      if (-n === EAGAIN) return true;
      if (-n === ECONNRESET) return false;
      throw new Error(`reading commands: ${errnoName(-n)}`);
    }
    if (n === 0) {
      if (ch.framer?.pending) throw new Violation(`EOF inside a frame (${ch.framer.pending} of ${IOREGIONFD_MSG_SIZE} bytes)`);
      return false;
    }
    ch.received += n;
    ch.framer!.push(readBuf.subarray(0, n));
    return true;
  }

  /**
   * SEQPACKET: recvmmsg takes every record already queued (up to RECORD_BATCH) in one system call, so
   * a run of posted writes costs one call, not one each. Each record must be exactly one command.
   */
  function pumpRecords(ch: Channel, spin: boolean): boolean {
    const fd = ch.spec.cmd_fd;
    let n = spin ? spinner.spin(() => records.receive(fd, RECORD_BATCH, MSG_DONTWAIT)) : -EAGAIN;
    if (n === -EAGAIN) n = records.receive(fd);
    if (n < 0) {
      if (-n === EAGAIN) return true;
      if (-n === ECONNRESET) return false;
      throw new Error(`reading commands: ${errnoName(-n)}`);
    }
    // A zero-length record is EOF (commands are never empty): once the peer has closed, recvmmsg fills
    // the rest of the vector with them. The commands before it are still served; the next call ends.
    let count = 0;
    while (count < n && records.length(count) !== 0) count++;
    if (count === 0) return false;
    ch.received = ch.framed * IOREGIONFD_MSG_SIZE + count * IOREGIONFD_MSG_SIZE;
    for (let i = 0; i < count; i++) {
      const len = records.length(i);
      if (len !== IOREGIONFD_MSG_SIZE || records.truncated(i)) throw new Violation(`a ${records.truncated(i) ? 'longer' : `${len}-byte`} message where a ${IOREGIONFD_MSG_SIZE}-byte command belongs`);
      if (!ch.open) return false;
      handleFrame(records.view, i * IOREGIONFD_MSG_SIZE);
    }
    return true;
  }

  const doorbells = [...(opts.doorbells ?? new Map()).entries()];
  try {
    if (channels.length === 1 && doorbells.length === 0) {
      const ch = channels[0];
      while (ch.open && pump(ch, true)) { /* serve */ }
      closeChannel(ch);
      return EXIT_OK;
    }
    const poll = new PollSet(channels.length + doorbells.length + 1);
    for (;;) {
      const live = channels.filter((c) => c.open);
      // KVM released every channel (deassign, VM gone): done. A task with no channels lives on its lifeline.
      if (live.length === 0 && (channels.length > 0 || opts.lifelineFd === undefined)) return EXIT_OK;
      let n = 0;
      for (const c of live) poll.set(n++, c.spec.cmd_fd, POLLIN);
      for (const [, fd] of doorbells) poll.set(n++, fd, POLLIN);
      if (opts.lifelineFd !== undefined) poll.set(n++, opts.lifelineFd, POLLIN);
      if (spinner.spin(() => poll.wait(n, 0) || -EAGAIN) === -EAGAIN) poll.wait(n, -1);
      let i = 0;
      for (const c of live) {
        const ev = poll.revents(i++);
        if (ev & POLLNVAL) closeChannel(c);
        else if (ev & (POLLIN | POLLHUP | POLLERR) && !pump(c, false)) closeChannel(c);
      }
      for (const [name, fd] of doorbells) {
        if (poll.revents(i++) & POLLIN) {
          const count = eventfdRead(fd);
          if (count) model.onEventfd?.(name, count);
        }
      }
      if (opts.lifelineFd !== undefined && poll.revents(i) & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
        const b = new Uint8Array(1);
        if (readRaw(opts.lifelineFd, b, 1) <= 0) return EXIT_OK;
      }
    }
  } catch (e) {
    if (e instanceof Violation) {
      log(`protocol violation on channel ${channels.indexOf(current!)}: ${e.message}; closing`);
      channels.forEach(closeChannel);
      return EXIT_PROTOCOL;
    }
    log(`internal error: ${(e as Error).stack ?? e}`);
    channels.forEach(closeChannel);
    return EXIT_INTERNAL;
  }
}
