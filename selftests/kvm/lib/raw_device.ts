// A device played by the test itself: the VMM process holds the device end of a region's fds and
// answers commands while a KVM_RUN is in flight, so tests can see every wire byte and choose every
// answer (including wrong ones).

import { EAGAIN } from '../../../proto/errno';
import { decodeCmd, encodeResp, IOREGIONFD_MSG_SIZE, IoregionfdCmd, WireLayout } from '../../../proto/ioregionfd-wire';
import { PollSet, POLLIN, readRaw, writeRaw } from '../../../proto/os';
import { IoctlResult } from '../../../proto/control';
import { __vcpu_run_start, __vcpu_run_wait, KvmVcpu } from './kvm_util';
import { TEST_ASSERT } from './test_util';

export interface RawCommand {
  bytes: Uint8Array;
  cmd: IoregionfdCmd;
}

/** What the device answers: a value (a 32-byte response), raw bytes (anything), or nothing. */
export type Answer = bigint | Uint8Array | undefined;

/** Read every whole 32-byte command waiting on fd (non-blocking), decoded with `layout`. */
export function drainCommands(fd: number, layout: WireLayout = 'v3'): RawCommand[] {
  const out: RawCommand[] = [];
  const p = new PollSet(1);
  for (;;) {
    p.set(0, fd, POLLIN);
    if (!p.wait(1, 0)) return out;
    const c = readCommand(fd, layout);
    if (!c) return out;
    out.push(c);
  }
}

/** Read one command (blocking); undefined at EOF. Works on SEQPACKET, stream sockets and pipes. */
export function readCommand(fd: number, layout: WireLayout = 'v3'): RawCommand | undefined {
  const bytes = new Uint8Array(IOREGIONFD_MSG_SIZE);
  let got = 0;
  while (got < IOREGIONFD_MSG_SIZE) {
    const n = readRaw(fd, got ? bytes.subarray(got) : bytes, IOREGIONFD_MSG_SIZE - got);
    if (n === -EAGAIN) continue;
    TEST_ASSERT(n >= 0, `reading a command: errno ${-n}`);
    if (n === 0) return undefined;
    got += n;
  }
  return { bytes, cmd: decodeCmd(layout, new DataView(bytes.buffer)) };
}

/** Write a response: a value as a proper 32-byte response, or raw bytes as given. */
export function writeAnswer(fd: number, answer: Answer): void {
  if (answer === undefined) return;
  let bytes: Uint8Array;
  if (typeof answer === 'bigint') {
    bytes = new Uint8Array(IOREGIONFD_MSG_SIZE);
    encodeResp(answer, new DataView(bytes.buffer), 0);
  } else {
    bytes = answer;
  }
  // write(2), not send(2): the fd may be a pipe. Node ignores SIGPIPE, so a gone peer is just EPIPE.
  const n = writeRaw(fd, bytes, bytes.length);
  TEST_ASSERT(n === bytes.length, `writing a response: ${n}`);
}

/**
 * One KVM_RUN while serving the device end(s): every command that arrives is recorded and answered
 * with answer(cmd) on the same channel unless that is undefined (so a test can also answer posted
 * writes, which the protocol forbids). Returns the KVM_RUN result and the commands in arrival order.
 */
export function runServing(
  vcpu: KvmVcpu,
  channels: { cmdFd: number; respFd: number; layout?: WireLayout }[],
  answer: (c: RawCommand, channel: number) => Answer,
): { run: IoctlResult; commands: RawCommand[] } {
  const commands: RawCommand[] = [];
  const p = new PollSet(channels.length + 1);
  __vcpu_run_start(vcpu);
  for (;;) {
    channels.forEach((c, i) => p.set(i, c.cmdFd, POLLIN));
    p.set(channels.length, vcpu.fd, POLLIN);
    p.wait(channels.length + 1, 10000);
    let any = false;
    for (let i = 0; i < channels.length; i++) {
      if (!p.revents(i)) continue;
      const c = readCommand(channels[i].cmdFd, channels[i].layout ?? 'v3');
      if (!c) continue;
      any = true;
      commands.push(c);
      writeAnswer(channels[i].respFd, answer(c, i));
    }
    if (!any && p.revents(channels.length)) return { run: __vcpu_run_wait(vcpu), commands };
    TEST_ASSERT(any || p.revents(channels.length), 'KVM_RUN neither returned nor sent a command within 10 s');
  }
}
