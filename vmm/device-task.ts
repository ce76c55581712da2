// Spawning device tasks: a built-in device model (device-task/main.js) or any executable that follows
// the fd contract (proto/device-task-manifest.ts). The VMM builds each channel's transport, passes the
// task its fds at 3, 4, ... with the JSON manifest in IOREGIONFD_DEVICE_TASK (and, for programs that
// prefer argv, fd numbers substituted into placeholders), registers its regions, and always reaps it.

import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import type { Socket } from 'net';
import * as path from 'path';
import {
  ChannelSpec, DeviceTaskManifest, encodeManifest, MANIFEST_ENV, MANIFEST_VERSION, MemorySpec, Transport,
} from '../proto/device-task-manifest';
import { refuseInGuestContext } from '../proto/guest-cpu';
import { closeQuietly, pipe, socketpair } from '../proto/os';
import type { Vm } from './vm';

const DEVICE_TASK_MAIN = path.join(__dirname, '..', 'device-task', 'main.js');

/** One ioregion served by the task. */
export interface RegionSpec {
  guest_paddr: bigint;
  memory_size: bigint;
  /** KVM_IOREGION_PIO, KVM_IOREGION_POSTED_WRITES. */
  flags?: number;
  user_data?: bigint;
  /** Which channel (index into `channels`) serves it; default 0. */
  channel?: number;
}

export interface DeviceTaskSpec {
  /** A built-in device model (device-task/devices), run as `node device-task/main.js`. */
  device?: string;
  /**
   * Or any executable that follows the fd contract: argv, e.g. ['python3', 'dev.py']. An argument may
   * name an fd by placeholder, replaced by its number: {cmd_fd:N}, {resp_fd:N} (channel N),
   * {memory_fd:N} (memory range N), {eventfd:NAME}, {lifeline_fd}; e.g. '--cmd={cmd_fd:0}'.
   */
  command?: string[];
  config?: Record<string, unknown>;
  /** One transport per channel; default one 'seqpacket'. */
  channels?: Transport[];
  layout?: 'v3' | 'v1';
  /** Guest memory for DMA: every memory slot of this VM, or explicit ranges (our fds). */
  memory?: Vm | MemorySpec[];
  /** Named eventfds (our fd numbers) to pass, e.g. { doorbell: ioeventfdFd, irq: irqfdFd }. */
  eventfds?: Record<string, number>;
  /** Register `regions` on this VM once the task is up. */
  vm?: Vm;
  regions?: RegionSpec[];
  /**
   * How long the task busy-polls for its next command before it blocks, in ns (manifest poll_ns;
   * default: the SDK's, 50000; 0 turns polling off).
   */
  pollNs?: number;
  /** 'inherit' (default): the task writes to our stdout/stderr; 'capture': kept, see DeviceTask.output(). */
  output?: 'inherit' | 'capture';
}

export interface DeviceChannel {
  transport: Transport;
  /** KVM reads responses from this fd: kvm_ioregion.read_fd. */
  read_fd: number;
  /** KVM writes commands to this fd: kvm_ioregion.write_fd (the same socket as read_fd unless 'pipe'). */
  write_fd: number;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DeviceTask {
  pid: number;
  channels: DeviceChannel[];
  /** The manifest the task was given (fd numbers as the task sees them). */
  manifest: DeviceTaskManifest;
  exited: Promise<ExitStatus>;
  /**
   * Close our ends (the task sees EOF on its lifeline, or on its channels if KVM let go of them) and
   * wait for it to exit; SIGTERM after a second, SIGKILL after timeoutMs.
   */
  stop(timeoutMs?: number): Promise<ExitStatus>;
  /** Close our channel fds (after KVM_SET_IOREGION the region holds its own references). */
  closeChannelFds(): void;
  /** With output 'capture': what the task wrote so far. */
  output(): { stdout: string; stderr: string };
}

const live = new Set<ChildProcess>();
/** How long stop() waits for a clean exit before SIGTERM. */
const STOP_GRACE_MS = 1000;
let killOnExit = false;

/**
 * Kill whatever tasks are left when this process exits. Installed by the first spawn, not at import:
 * guest code imports this module too, in every vCPU thread, where it must add no listener.
 */
function installKillOnExit(): void {
  if (killOnExit) return;
  killOnExit = true;
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

/** Why `file` (a path, or a name looked up in PATH) cannot be executed, or undefined if it can. */
export function executableProblem(file: string): string | undefined {
  const candidates = file.includes('/') ? [file] : (process.env.PATH ?? '').split(':').filter(Boolean).map((d) => path.join(d, file));
  let problem = file.includes('/') ? 'ENOENT (no such file)' : 'ENOENT (not found in PATH)';
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return undefined;
      problem = 'EACCES (not a regular file)';
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') problem = `${code} (${(e as Error).message})`;
    }
  }
  return problem;
}

/** Replace the fd placeholders of one argument; an unknown placeholder is an error. */
function substitute(arg: string, m: DeviceTaskManifest): string {
  return arg.replace(/\{([a-z_]+)(?::([^}]+))?\}/g, (whole, kind: string, key: string | undefined) => {
    const index = key === undefined ? -1 : Number(key);
    let fd: number | undefined;
    if (kind === 'cmd_fd') fd = m.channels[index]?.cmd_fd;
    else if (kind === 'resp_fd') fd = m.channels[index]?.resp_fd;
    else if (kind === 'memory_fd') fd = m.memory[index]?.fd;
    else if (kind === 'eventfd' && key !== undefined) fd = m.eventfds[key];
    else if (kind === 'lifeline_fd' && key === undefined) fd = m.lifeline_fd;
    if (fd === undefined) throw new Error(`spawnDeviceTask: argument '${arg}': ${whole} names no fd of this task`);
    return String(fd);
  });
}

/** Spawn a device task with its transports; register `regions` if a VM is given. */
export function spawnDeviceTask(spec: DeviceTaskSpec): DeviceTask {
  refuseInGuestContext('spawnDeviceTask()');
  if (spec.pollNs !== undefined && !(Number.isSafeInteger(spec.pollNs) && spec.pollNs >= 0)) {
    throw new RangeError(`spawnDeviceTask: pollNs must be a whole number of ns >= 0, got ${spec.pollNs}`);
  }
  installKillOnExit();
  const argv = spec.command ?? (spec.device ? [process.execPath, '--enable-source-maps', DEVICE_TASK_MAIN] : undefined);
  if (!argv || argv.length === 0) throw new Error('spawnDeviceTask: give a built-in device name or a command');
  // Node reports a failed exec only later, as an event: find out now, before any region is registered.
  const cannotRun = executableProblem(argv[0]);
  if (cannotRun) throw new Error(`spawnDeviceTask: cannot run '${argv[0]}': ${cannotRun}`);

  const childFds: number[] = [];
  const ours: number[] = [];
  const give = (fd: number, closeAfterSpawn: boolean) => {
    childFds.push(fd);
    if (closeAfterSpawn) ours.push(fd);
    return 3 + childFds.length - 1;
  };
  const channels: DeviceChannel[] = [];
  const specs: ChannelSpec[] = [];
  for (const transport of spec.channels ?? ['seqpacket']) {
    if (transport === 'pipe') {
      const [cmdRead, cmdWrite] = pipe();
      const [respRead, respWrite] = pipe();
      channels.push({ transport, read_fd: respRead, write_fd: cmdWrite });
      specs.push({ cmd_fd: give(cmdRead, true), resp_fd: give(respWrite, true), transport });
    } else {
      const [kvmEnd, devEnd] = socketpair(transport);
      channels.push({ transport, read_fd: kvmEnd, write_fd: kvmEnd });
      const n = give(devEnd, true);
      specs.push({ cmd_fd: n, resp_fd: n, transport });
    }
  }
  const ranges = Array.isArray(spec.memory)
    ? spec.memory
    : [...(spec.memory?.regions.values() ?? [])].map((r) => ({ fd: r.fd, gpa: r.gpa, size: BigInt(r.size), offset: BigInt(r.offset) }));
  const memory: MemorySpec[] = ranges.map((r) => ({ ...r, fd: give(r.fd, false) }));
  const eventfds: Record<string, number> = {};
  for (const [name, fd] of Object.entries(spec.eventfds ?? {})) eventfds[name] = give(fd, false);
  const [lifelineOurs, lifelineTheirs] = socketpair('stream');
  const lifelineFd = give(lifelineTheirs, true);
  let lifeline = lifelineOurs;
  const closeChannels = () => channels.forEach((c) => [c.read_fd, c.write_fd].forEach(closeQuietly));

  const manifest: DeviceTaskManifest = {
    version: MANIFEST_VERSION, device: spec.device ?? path.basename(argv[0]), config: spec.config ?? {},
    layout: spec.layout ?? 'v3', channels: specs, memory, eventfds, lifeline_fd: lifelineFd,
    ...(spec.pollNs === undefined ? {} : { poll_ns: spec.pollNs }),
  };
  let args: string[];
  try {
    args = argv.slice(1).map((a) => substitute(a, manifest));
  } catch (e) {
    ours.forEach(closeQuietly);
    closeChannels();
    closeQuietly(lifeline);
    throw e;
  }
  const capture = spec.output === 'capture';
  const child = spawn(argv[0], args, {
    stdio: ['ignore', capture ? 'pipe' : 'inherit', capture ? 'pipe' : 'inherit', ...childFds],
    env: { ...process.env, [MANIFEST_ENV]: encodeManifest(manifest) },
  });
  ours.forEach(closeQuietly);
  if (child.pid === undefined) {
    closeChannels();
    closeQuietly(lifeline);
    throw new Error(`spawnDeviceTask: '${argv[0]}' did not start`);
  }
  live.add(child);
  // A task must not keep the VMM alive; our exit handler kills whatever is left.
  child.unref();
  const captured = { stdout: '', stderr: '' };
  for (const [stream, key] of [[child.stdout, 'stdout'], [child.stderr, 'stderr']] as const) {
    if (!stream) continue;
    stream.setEncoding('utf8').on('data', (s: string) => (captured[key] += s));
    // With stdio 'pipe' the stream is a net.Socket (typed as the Readable it extends).
    (stream as Socket).unref();
  }
  const exited = new Promise<ExitStatus>((resolve) => {
    // 'close' comes after the exit and after captured output has drained.
    child.once(capture ? 'close' : 'exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });

  let channelFdsOpen = true;
  const task: DeviceTask = {
    pid: child.pid,
    channels,
    manifest,
    exited,
    closeChannelFds() {
      if (!channelFdsOpen) return;
      channelFdsOpen = false;
      closeChannels();
    },
    async stop(timeoutMs = 5000) {
      task.closeChannelFds();
      closeQuietly(lifeline);
      lifeline = -1;
      child.ref();
      // A task blocked reading a channel that KVM still holds (its region is registered) sees neither
      // EOF nor its lifeline: ask it to go, then make it.
      const term = setTimeout(() => child.kill('SIGTERM'), Math.min(STOP_GRACE_MS, timeoutMs));
      const kill = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const status = await exited;
      clearTimeout(term);
      clearTimeout(kill);
      return status;
    },
    output: () => ({ ...captured }),
  };

  if (spec.vm) {
    try {
      for (const r of spec.regions ?? []) {
        const ch = channels[r.channel ?? 0];
        spec.vm.setIoregion({
          guest_paddr: r.guest_paddr, memory_size: r.memory_size, user_data: r.user_data ?? 0n,
          read_fd: ch.read_fd, write_fd: ch.write_fd, flags: r.flags ?? 0,
        });
      }
    } catch (e) {
      void task.stop();
      throw e;
    }
  }
  return task;
}
