// Spawning device tasks from a VMM: build their transports, hand them their fds by the manifest
// contract (proto/device-task-manifest.ts), register their regions with KVM, and always reap them.

import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import {
  ChannelSpec, DeviceTaskManifest, encodeManifest, MANIFEST_ENV, MANIFEST_VERSION, MemorySpec, Transport,
} from '../../../proto/device-task-manifest';
import { refuseInGuestContext } from '../../../proto/guest-cpu';
import { closeQuietly, pipe, socketpair } from '../../../proto/os';
import { vm_set_ioregion } from './ioregionfd';
import { KvmVm } from './kvm_util';

const DEVICE_TASK_MAIN = path.join(__dirname, '..', '..', '..', 'device-task', 'main.js');

export interface RegionSpec {
  guest_paddr: bigint;
  memory_size: bigint;
  flags?: number;
  user_data?: bigint;
  /** Which channel (index into `channels`) serves it; default 0. */
  channel?: number;
}

export interface DeviceTaskSpec {
  /** A built-in model (device-task/devices), run as `node device-task/main.js`. */
  device?: string;
  /** Or any executable that follows the fd contract: argv, e.g. ['python3', 'dev.py']. */
  command?: string[];
  config?: Record<string, unknown>;
  /** One transport per channel; default one 'seqpacket'. */
  channels?: Transport[];
  layout?: 'v3' | 'v1';
  /** Share this VM's guest memory (every memory region) with the task for DMA. */
  memory?: KvmVm;
  /** Named eventfds (our fd numbers) to pass, e.g. { doorbell: ioeventfdFd, irq: irqfdFd }. */
  eventfds?: Record<string, number>;
  /** Register these ioregions on `vm` once the task is up. */
  vm?: KvmVm;
  regions?: RegionSpec[];
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
  exited: Promise<ExitStatus>;
  /**
   * Close our ends (the task sees EOF on its lifeline, or on its channels if KVM let go of them) and
   * wait for it to exit; SIGTERM after a second, SIGKILL after timeoutMs.
   */
  stop(timeoutMs?: number): Promise<ExitStatus>;
  /** Close our channel fds (after KVM_SET_IOREGION the region holds its own references). */
  closeChannelFds(): void;
}

const live = new Set<ChildProcess>();
/** How long stop() waits for a clean exit before SIGTERM. */
const STOP_GRACE_MS = 1000;
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** Why `file` (a path, or a name looked up in PATH) cannot be executed, or undefined if it can. */
function executableProblem(file: string): string | undefined {
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

/** Spawn a device task with its transports; register `regions` if a VM is given. */
export function spawn_device_task(spec: DeviceTaskSpec): DeviceTask {
  refuseInGuestContext('spawn_device_task()');
  const argv = spec.command ?? (spec.device ? [process.execPath, '--enable-source-maps', DEVICE_TASK_MAIN] : undefined);
  if (!argv || argv.length === 0) throw new Error('spawn_device_task: give a built-in device name or a command');
  // Node reports a failed exec only later, as an event: find out now, before any region is registered.
  const cannotRun = executableProblem(argv[0]);
  if (cannotRun) throw new Error(`spawn_device_task: cannot run '${argv[0]}': ${cannotRun}`);
  const childFds: number[] = [];
  const closeAfterSpawn: number[] = [];
  const give = (fd: number, ours: boolean) => {
    childFds.push(fd);
    if (ours) closeAfterSpawn.push(fd);
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
  const memory: MemorySpec[] = [];
  for (const r of spec.memory?.regions.values() ?? []) {
    memory.push({ fd: give(r.fd, false), gpa: r.gpa, size: BigInt(r.size), offset: BigInt(r.offset) });
  }
  const eventfds: Record<string, number> = {};
  for (const [name, fd] of Object.entries(spec.eventfds ?? {})) eventfds[name] = give(fd, false);
  const lifelinePair = socketpair('stream');
  let lifeline = lifelinePair[0];
  const lifelineChild = lifelinePair[1];
  const lifelineFd = give(lifelineChild, true);

  const manifest: DeviceTaskManifest = {
    version: MANIFEST_VERSION, device: spec.device ?? path.basename(argv[0]), config: spec.config ?? {},
    layout: spec.layout ?? 'v3', channels: specs, memory, eventfds, lifeline_fd: lifelineFd,
  };
  const child = spawn(argv[0], argv.slice(1), {
    stdio: ['ignore', 'inherit', 'inherit', ...childFds],
    env: { ...process.env, [MANIFEST_ENV]: encodeManifest(manifest) },
  });
  closeAfterSpawn.forEach(closeQuietly);
  if (child.pid === undefined) {
    channels.forEach((c) => [c.read_fd, c.write_fd].forEach(closeQuietly));
    closeQuietly(lifeline);
    throw new Error(`spawn_device_task: '${argv[0]}' did not start`);
  }
  live.add(child);
  // A task must not keep the VMM alive; our exit handler kills whatever is left.
  child.unref();
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
    child.once('error', () => {
      live.delete(child);
      resolve({ code: null, signal: null });
    });
  });

  let channelFdsOpen = true;
  const task: DeviceTask = {
    pid: child.pid ?? -1,
    channels,
    exited,
    closeChannelFds() {
      if (!channelFdsOpen) return;
      channelFdsOpen = false;
      for (const c of channels) {
        closeQuietly(c.read_fd);
        if (c.write_fd !== c.read_fd) closeQuietly(c.write_fd);
      }
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
  };

  if (spec.vm) {
    for (const r of spec.regions ?? []) {
      const ch = channels[r.channel ?? 0];
      vm_set_ioregion(spec.vm, {
        guest_paddr: r.guest_paddr, memory_size: r.memory_size, user_data: r.user_data ?? 0n,
        read_fd: ch.read_fd, write_fd: ch.write_fd, flags: r.flags ?? 0,
      });
    }
  }
  return task;
}
