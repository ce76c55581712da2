// Just enough QMP (QEMU's JSON monitor protocol) to know that a remote has really started: the
// greeting, qmp_capabilities, and query-status until it says "running". Synchronous, with a deadline:
// the device task has no event loop while it starts its device.
//
// Why wait for "running": the remote resets the machine just after its message loop starts, and a
// config write that lands before that reset is wiped (BARs, COMMAND). A reply on the device socket
// does not prove the reset is over; the run state does.

import { closeQuietly, PollSet, POLLIN, readRaw, sendRaw, sleepUntilSignal } from '../../../proto/os';

/** Longest QMP line we buffer: the greeting and query-status replies are a few hundred bytes. */
const MAX_LINE = 64 * 1024;
/** Pause between two query-status requests while the remote is still starting. */
const STATUS_POLL_MS = 10;

/** The QMP connection ended or timed out while we waited: `exited` tells which. */
export class QmpClosed extends Error {
  constructor(message: string, readonly exited: boolean) {
    super(message);
    this.name = 'QmpClosed';
  }
}

export class QmpClient {
  private buffered = '';
  private readonly buf = new Uint8Array(4096);
  private readonly poll = new PollSet(1);

  constructor(readonly fd: number) {}

  /** The next JSON message (events included), or QmpClosed at EOF or at the deadline (ms since epoch). */
  private next(deadline: number): Record<string, unknown> {
    for (;;) {
      const nl = this.buffered.indexOf('\n');
      if (nl >= 0) {
        const line = this.buffered.slice(0, nl).trim();
        this.buffered = this.buffered.slice(nl + 1);
        if (line === '') continue;
        try {
          return JSON.parse(line) as Record<string, unknown>;
        } catch {
          throw new QmpClosed(`QMP sent a line that is not JSON: ${line.slice(0, 200)}`, false);
        }
      }
      if (this.buffered.length > MAX_LINE) throw new QmpClosed('QMP sent a line longer than 64 KiB', false);
      const left = deadline - Date.now();
      if (left <= 0) throw new QmpClosed('timed out waiting for QMP', false);
      this.poll.set(0, this.fd, POLLIN);
      if (this.poll.wait(1, left) === 0) continue;
      const n = readRaw(this.fd, this.buf);
      if (n <= 0) throw new QmpClosed('the remote closed its QMP socket: it exited', true);
      this.buffered += Buffer.from(this.buf.subarray(0, n)).toString('utf8');
    }
  }

  /** Send a command; return its "return" value, skipping events. Throws on an "error" reply. */
  execute(command: string, deadline: number): unknown {
    const text = Buffer.from(`${JSON.stringify({ execute: command })}\n`);
    let done = 0;
    while (done < text.length) {
      const n = sendRaw(this.fd, text.subarray(done));
      if (n < 0) throw new QmpClosed('the remote closed its QMP socket: it exited', true);
      done += n;
    }
    for (;;) {
      const msg = this.next(deadline);
      if ('return' in msg) return msg.return;
      if ('error' in msg) throw new Error(`QMP ${command} failed: ${JSON.stringify(msg.error)}`);
    }
  }

  /** Read the greeting, leave capabilities negotiation mode, then poll query-status until "running". */
  waitRunning(deadline: number): void {
    const greeting = this.next(deadline);
    if (!('QMP' in greeting)) throw new QmpClosed(`QMP greeting expected, got ${JSON.stringify(greeting).slice(0, 200)}`, false);
    this.execute('qmp_capabilities', deadline);
    for (;;) {
      const status = this.execute('query-status', deadline) as { status?: string } | undefined;
      if (status?.status === 'running') return;
      // Not a busy wait: the remote needs the CPU to finish starting.
      sleepUntilSignal(Math.min(STATUS_POLL_MS, Math.max(0, deadline - Date.now())));
    }
  }

  /** Wait up to timeoutMs for the remote to close the socket (it exited); true if it did. */
  waitClosed(timeoutMs: number): boolean {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      this.poll.set(0, this.fd, POLLIN);
      if (this.poll.wait(1, left) === 0) continue;
      // Whatever is still queued (events) is read and dropped until EOF.
      const n = readRaw(this.fd, this.buf);
      if (n <= 0) return true;
    }
  }

  close(): void {
    closeQuietly(this.fd);
  }
}
