// Worker thread of a qemu-remote device task: copies the remote's stderr to the task's log line by
// line, and notices the remote's death at once (EOF on that pipe) even while the main thread sits in
// a blocking read of its ioregionfd channel. A death while the task is serving is a device failure:
// this thread ends the whole task, so its channels close and the guest's next access takes KVM's
// failure path instead of waiting on a device that is gone. A death during start-up is left to the
// main thread (it reports why); a death the main thread asked for (stopping) is the normal end.

import * as fs from 'fs';
import { workerData } from 'worker_threads';
import { exitProcessNow } from '../../../proto/os';

/** Words of the shared state block (an Int32Array over a SharedArrayBuffer). */
export const STATE = 0;
export const EOF_SEEN = 1;
export const STATE_WORDS = 2;
/** Values of the STATE word. */
export const STARTING = 0;
export const SERVING = 1;
export const STOPPING = 2;

/** The device task's exit code when its remote died while it was serving. */
export const EXIT_REMOTE_GONE = 4;

/**
 * How a child that has exited but is not reaped yet (a zombie: the task's event loop, which reaps,
 * is not running) ended, from /proc: "exit status 1", "signal 9"; undefined if it is still running
 * after waitMs, or gone.
 */
export function zombieStatus(pid: number, waitMs = 200): string | undefined {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (let waited = 0; ; waited += 5) {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      return undefined;
    }
    // Fields after the command name: [0] is field 3 (state), [49] is field 52 (exit_code, a wait status).
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    if (rest[0] === 'Z') {
      const status = Number(rest[49]);
      return (status & 0x7f) === 0 ? `exit status ${(status >> 8) & 0xff}` : `signal ${status & 0x7f}`;
    }
    if (waited >= waitMs) return undefined;
    Atomics.wait(nap, 0, 0, 5);
  }
}

export interface ForwarderData {
  /** The remote's pid, for the line that reports its death. */
  pid: number;
  /** Read end of the pipe that is the remote's stdout and stderr. */
  fd: number;
  /** Prefix of every forwarded line, e.g. "device-task[12]: qemu[13]: ". */
  prefix: string;
  state: SharedArrayBuffer;
}

function run(d: ForwarderData): void {
  const words = new Int32Array(d.state);
  const buf = Buffer.alloc(4096);
  let partial = '';
  const emit = (line: string) => fs.writeSync(2, `${d.prefix}${line}\n`);
  for (;;) {
    let n: number;
    try {
      n = fs.readSync(d.fd, buf, 0, buf.length, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN' || (e as NodeJS.ErrnoException).code === 'EINTR') continue;
      n = 0;
    }
    if (n === 0) break;
    partial += buf.toString('utf8', 0, n);
    for (let nl = partial.indexOf('\n'); nl >= 0; nl = partial.indexOf('\n')) {
      emit(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    }
  }
  if (partial) emit(partial);
  Atomics.store(words, EOF_SEEN, 1);
  Atomics.notify(words, EOF_SEEN);
  // The main thread sets SERVING and then looks at EOF_SEEN; we set EOF_SEEN and then look at STATE:
  // whichever order they happen in, at least one of the two threads sees the death.
  if (Atomics.load(words, STATE) === SERVING) {
    emit(`exited while serving (${zombieStatus(d.pid) ?? 'status unknown'}): device failure, ending the device task`);
    exitProcessNow(EXIT_REMOTE_GONE);
  }
}

if (workerData && typeof (workerData as ForwarderData).fd === 'number') run(workerData as ForwarderData);
