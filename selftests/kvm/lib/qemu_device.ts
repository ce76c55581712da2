// QEMU's device models as device tasks, from the VMM side: spawn_qemu_device() starts the qemu-remote
// bridge (device-task/devices/qemu-remote) with the QEMU device named, registers each BAR the caller
// places as an ioregion (user_data = the BAR number) and wires the device's INTx through KVM_IRQFD
// with KVM_IRQFD_FLAG_RESAMPLE, so the remote QEMU process interrupts the guest with nobody in between.
// Tests skip (exit 4) when qemu-system-x86_64 with the x-remote machine is not installed.

import { spawnSync } from 'child_process';
import * as fs from 'fs';
import type { Transport } from '../../../proto/device-task-manifest';
import { KVM_IOREGION_PIO, KVM_IOREGION_POSTED_WRITES } from '../../../proto/kvm-uapi';
import { closeQuietly, eventfd } from '../../../proto/os';
import { DeviceTask, ExitStatus, RegionSpec, spawn_device_task } from './device_task';
import { kvm_assign_irqfd_resample } from './irq';
import { KvmVm } from './kvm_util';
import { __TEST_REQUIRE } from './test_util';

export const QEMU_SYSTEM_X86_64 = 'qemu-system-x86_64';
/** How to get it, for skip messages. */
export const QEMU_INSTALL_HINT = 'apt-get install -y --no-install-recommends qemu-system-x86';

let availability: { path?: string; reason?: string } | undefined;

/** The path of qemu-system-x86_64 if it is on PATH and has the x-remote machine; otherwise why not. */
export function qemu_system_x86_64(): { path?: string; reason?: string } {
  if (availability) return availability;
  const r = spawnSync(QEMU_SYSTEM_X86_64, ['-machine', 'help'], { encoding: 'utf8', timeout: 30000 });
  if (r.error || r.status !== 0) {
    availability = { reason: `${QEMU_SYSTEM_X86_64} is not installed (${QEMU_INSTALL_HINT})` };
  } else if (!/^x-remote\s/m.test(r.stdout)) {
    availability = { reason: `${QEMU_SYSTEM_X86_64} has no x-remote machine (multi-process QEMU is not built in)` };
  } else {
    const which = spawnSync('sh', ['-c', `command -v ${QEMU_SYSTEM_X86_64}`], { encoding: 'utf8' });
    availability = { path: which.stdout.trim() || QEMU_SYSTEM_X86_64 };
  }
  return availability;
}

/** Whether QEMU devices can run here (qemu-system-x86_64 with the x-remote machine). */
export function qemu_available(): boolean {
  return qemu_system_x86_64().path !== undefined;
}

/** Skip the test program (exit 4, with the reason) unless QEMU devices can run here. */
export function TEST_REQUIRE_QEMU(): void {
  const q = qemu_system_x86_64();
  __TEST_REQUIRE(q.path !== undefined, q.reason ?? '');
}

/** Where the VMM puts one BAR: its ioregion is [gpa, gpa + size), on the PIO bus when pio. */
export interface QemuBar {
  gpa: bigint;
  /** The BAR's size, as the device has it (the bridge refuses a wrong one). */
  size: bigint;
  pio?: boolean;
  /** Register the region with KVM_IOREGION_POSTED_WRITES: the guest does not wait for writes. */
  posted?: boolean;
}

export interface QemuDeviceSpec {
  vm: KvmVm;
  /** The QEMU -device driver: 'pci-testdev', 'nvme', 'virtio-blk-pci', ... */
  device: string;
  /** -device properties, e.g. { serial: 'deadbeef' }. */
  props?: Record<string, string | number | boolean>;
  /** A raw disk image, attached as the device's drive. */
  drive?: string;
  /** BAR number -> where the guest finds it. */
  bars: Record<number, QemuBar>;
  /** Wire INTx to this GSI (KVM_IRQFD + KVM_IRQFD_FLAG_RESAMPLE; the VM needs an irqchip). */
  intx_gsi?: number;
  /** Share the VM's guest memory for DMA (default true). */
  memory?: boolean;
  /** The channel's transport (default 'seqpacket'). */
  transport?: Transport;
}

export interface QemuDevice extends DeviceTask {
  /** The INTx irqfd and its resamplefd (our fds), when intx_gsi was given. */
  intx?: { gsi: number; eventfd: number; resamplefd: number };
  /** The regions as registered. */
  regions: RegionSpec[];
  /** The remote QEMU process (a child of the device task), once it has started. */
  remote_pid(): number | undefined;
}

/** The children of `pid` whose command name starts with `comm`. */
export function child_pids(pid: number, comm: string): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const open = stat.indexOf('(');
      const close = stat.lastIndexOf(')');
      const fields = stat.slice(close + 2).split(' ');
      if (Number(fields[1]) === pid && stat.slice(open + 1, close).startsWith(comm)) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** True when the process no longer runs (gone, or a zombie nobody reaped yet). */
export function process_gone(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/**
 * Spawn a QEMU device as a device task behind ioregionfd: the shape of spawn_device_task, plus the
 * device, its BAR placement and its INTx GSI. The remote starts in the background; a guest access
 * that comes first waits in the channel until the device is set up.
 */
export function spawn_qemu_device(spec: QemuDeviceSpec): QemuDevice {
  const hex = (v: bigint) => `0x${v.toString(16)}`;
  const bars: Record<string, { gpa: string; size: string; pio: boolean }> = {};
  const regions: RegionSpec[] = [];
  for (const [n, b] of Object.entries(spec.bars)) {
    bars[n] = { gpa: hex(b.gpa), size: hex(b.size), pio: b.pio === true };
    regions.push({
      guest_paddr: b.gpa, memory_size: b.size, user_data: BigInt(n),
      flags: (b.pio ? KVM_IOREGION_PIO : 0) | (b.posted ? KVM_IOREGION_POSTED_WRITES : 0),
    });
  }
  let intx: QemuDevice['intx'];
  const eventfds: Record<string, number> = {};
  if (spec.intx_gsi !== undefined) {
    intx = { gsi: spec.intx_gsi, eventfd: eventfd(0), resamplefd: eventfd(0) };
    kvm_assign_irqfd_resample(spec.vm, intx.gsi, intx.eventfd, intx.resamplefd);
    eventfds.intx = intx.eventfd;
    eventfds.intx_resample = intx.resamplefd;
  }
  const qemu = qemu_system_x86_64().path;
  const task = spawn_device_task({
    device: 'qemu-remote',
    config: { ...spec.props, device: spec.device, ...(spec.drive !== undefined ? { drive: spec.drive } : {}), bars, ...(qemu ? { qemu } : {}) },
    channels: [spec.transport ?? 'seqpacket'],
    memory: spec.memory === false ? undefined : spec.vm,
    eventfds,
    vm: spec.vm,
    regions,
  });
  return {
    ...task,
    intx,
    regions,
    remote_pid: () => child_pids(task.pid, 'qemu-system')[0],
    async stop(timeoutMs?: number): Promise<ExitStatus> {
      const status = await task.stop(timeoutMs);
      if (intx) [intx.eventfd, intx.resamplefd].forEach(closeQuietly);
      return status;
    },
  };
}
