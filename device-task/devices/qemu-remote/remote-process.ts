// Starting and stopping the remote QEMU process of a qemu-remote device task, so that nothing of it
// outlives the task:
// * it is started under `setpriv --pdeathsig KILL` when setpriv exists, so the kernel kills it the
//   moment the task dies, even by SIGKILL; without setpriv it still exits on its own within ~30 ms of
//   EOF on its device socket, which only the task holds;
// * it inherits exactly its stdio and two sockets: the task marks every other fd close-on-exec
//   first, or the remote would hold the task's ioregionfd channels open after the task died;
// * the task's exit (channels closed, a failure, any process.exit) stops it: close the device
//   socket, wait up to STOP_GRACE_MS for it to exit, then SIGKILL.
// Its stdout and stderr go to a pipe that a worker thread forwards to the task's log (see
// stderr-forwarder.ts, which also ends the task when the remote dies while serving).

import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { closeQuietly, pipe, socketpair } from '../../../proto/os';
import { QEMU_BINARY, QemuRemoteConfig, qemuRemoteArgs } from './config';
import { SocketLink } from './link';
import { QmpClient, QmpClosed } from './qmp';
import {
  EOF_SEEN, ForwarderData, SERVING, STATE, STATE_WORDS, STOPPING, zombieStatus,
} from './stderr-forwarder';

/** How long a remote gets to exit by itself after its socket closed, before SIGKILL. */
export const STOP_GRACE_MS = 2000;
/** The remote's fd numbers for its device socket and its QMP socket. */
const REMOTE_LINK_FD = 3;
const REMOTE_QMP_FD = 4;

/** The first executable file called `name` on PATH, or undefined. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir) continue;
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface RemoteProcess {
  pid: number;
  link: SocketLink;
  /** Start-up is over: from now on the remote's death ends the task (see stderr-forwarder.ts). */
  markServing(): void;
  /** Stop the remote (graceful, then SIGKILL) and wait for it; idempotent. */
  stop(): void;
}

/**
 * Start the remote described by `cfg` and wait until it runs (QMP query-status). Throws an Error
 * saying why when it cannot start; nothing is left running then.
 */
export function launchRemote(cfg: QemuRemoteConfig, log: (m: string) => void): RemoteProcess {
  const binary = cfg.qemu ?? findOnPath(QEMU_BINARY);
  if (!binary) throw new Error(`${QEMU_BINARY} is not on PATH (install qemu-system-x86, or give config.qemu)`);
  const setpriv = findOnPath('setpriv');
  const argv = [...(setpriv ? [setpriv, '--pdeathsig', 'KILL', '--'] : []), binary, ...qemuRemoteArgs(cfg, REMOTE_LINK_FD, REMOTE_QMP_FD)];

  // The task's manifest fds are close-on-exec already (checkManifestFds): QEMU gets only these.
  const [linkFd, remoteLinkFd] = socketpair('stream');
  const [qmpFd, remoteQmpFd] = socketpair('stream');
  const [errRead, errWrite] = pipe();
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', errWrite, errWrite, remoteLinkFd, remoteQmpFd] });
  [remoteLinkFd, remoteQmpFd, errWrite].forEach(closeQuietly);
  // Neither the remote nor the forwarder may keep the task alive: the exit hook below ends them.
  child.unref();
  child.on('error', () => undefined);
  if (child.pid === undefined) {
    [linkFd, qmpFd, errRead].forEach(closeQuietly);
    throw new Error(`cannot start ${argv[0]}`);
  }
  const pid = child.pid;
  const commandLine = argv.slice(setpriv ? 4 : 0).join(' ');

  const state = new Int32Array(new SharedArrayBuffer(4 * STATE_WORDS));
  const link = new SocketLink(linkFd);
  const qmp = new QmpClient(qmpFd);
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    Atomics.store(state, STATE, STOPPING);
    link.close();
    if (!qmp.waitClosed(STOP_GRACE_MS)) {
      log(`the remote (pid ${pid}) did not exit ${STOP_GRACE_MS} ms after its socket closed: SIGKILL`);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
      qmp.waitClosed(STOP_GRACE_MS);
    }
    qmp.close();
    // The remote is gone, so its stderr pipe is at EOF: let the forwarder leave its blocking read
    // before the task exits (Node aborts when it must end a thread that sits in a system call).
    Atomics.wait(state, EOF_SEEN, 0, STOP_GRACE_MS);
    process.removeListener('exit', stop);
  };
  // Registered before anything below can throw: from here on, every way out of the task stops the remote.
  process.on('exit', stop);

  const data: ForwarderData = { pid, fd: errRead, prefix: `device-task[${process.pid}]: qemu[${pid}]: `, state: state.buffer as SharedArrayBuffer };
  try {
    new Worker(path.join(__dirname, 'stderr-forwarder.js'), { workerData: data }).unref();
  } catch (e) {
    stop();
    closeQuietly(errRead);
    throw new Error(`cannot start the stderr forwarder: ${(e as Error).message}`);
  }

  try {
    qmp.waitRunning(Date.now() + cfg.startTimeoutMs);
  } catch (e) {
    stop();
    // Let the forwarder print the remote's last words before we say it failed.
    Atomics.wait(state, EOF_SEEN, 0, 1000);
    const status = zombieStatus(pid);
    const why = e instanceof QmpClosed && e.exited ? `exited while starting${status ? ` (${status})` : ''}; its stderr is above` : (e as Error).message;
    throw new Error(`${cfg.device}: the remote ${why} (pid ${pid}: ${commandLine})`);
  }
  return {
    pid,
    link,
    markServing() {
      Atomics.store(state, STATE, SERVING);
      if (Atomics.load(state, EOF_SEEN)) throw new Error(`${cfg.device}: the remote exited while the device was being set up`);
    },
    stop,
  };
}
