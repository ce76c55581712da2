// The VMM side of an NVMe controller in a device task: spawn the nvme task on a VM, map BAR0 by one
// of three doorbell paths, connect its interrupt vectors to GSIs through irqfds, and (for the classic
// path) forward BAR0 exits to it. The guest side is lib/nvme.ts.
//
//   'ioregionfd'  BAR0 registers as a synchronous ioregion (user_data 0), the doorbell page as a
//                 posted-writes ioregion (user_data 0x1000), both on one channel: no VMM exits at all
//   'ioeventfd'   registers and the admin queue's doorbells as above; the I/O queues' doorbells are
//                 KVM_IOEVENTFDs on one eventfd ("doorbell"); the controller reads the values from the
//                 guest's shadow doorbell page, so the guest must configure Doorbell Buffer Config
//   'exit'        no region: every BAR0 access is a KVM_EXIT_MMIO that nvme_handle_exit forwards to the
//                 task over its socket (reads and register writes wait for the answer, doorbell writes
//                 are forwarded posted, as a VMM that completes the exit at once would)

import {
  decodeResp, encodeCmdFields, IOREGIONFD_CMD_READ, IOREGIONFD_CMD_WRITE, IOREGIONFD_MSG_SIZE,
} from '../../../proto/ioregionfd-wire';
import { KVM_EXIT_MMIO, KVM_IOREGION_POSTED_WRITES } from '../../../proto/kvm-uapi';
import { closeQuietly, eventfd, readRaw, writeRaw } from '../../../proto/os';
import { DeviceTask, ExitStatus, RegionSpec, spawn_device_task } from './device_task';
import { vm_ioeventfd } from './ioeventfd';
import { kvm_assign_irqfd } from './irq';
import { exit_reason, KvmVcpu, KvmVm, le_store, le_value, run_mmio } from './kvm_util';
import { TEST_FAIL } from './test_util';

/** Where the tests put BAR0 (above vm_create()'s RAM, below 4 GiB), and its size. */
export const NVME_BAR0 = 0xe000_0000n;
export const NVME_BAR0_SIZE = 0x4000n;
const DOORBELLS = 0x1000n;

export type NvmeDoorbellPath = 'ioregionfd' | 'ioeventfd' | 'exit';

export interface NvmeVmmOptions {
  vm: KvmVm;
  path: NvmeDoorbellPath;
  /** The device's config (image, size, queues, ...). */
  config?: Record<string, unknown>;
  bar0?: bigint;
  /** Interrupt vectors to wire: vector v raises GSI gsiBase + v (the VM needs an irqchip). 0: none. */
  vectors?: number;
  gsiBase?: number;
  /** 'ioeventfd': I/O queues 1..ioQueues get ioeventfd doorbells (default 4). */
  ioQueues?: number;
}

export interface NvmeVmm {
  task: DeviceTask;
  path: NvmeDoorbellPath;
  bar0: bigint;
  /** Completes a BAR0 KVM_EXIT_MMIO ('exit' path) and returns true; false for any other exit. */
  handleExit(vcpu: KvmVcpu): boolean;
  /** Exits forwarded so far (reads, register writes, doorbell writes). */
  forwarded: { reads: number; writes: number; doorbells: number };
  /** After kvm_vm_free: wait for the task to exit and close what is left. */
  stop(timeoutMs?: number): Promise<ExitStatus>;
}

/** Spawn the nvme device task for `vm` and map its BAR0 by `path`. */
export function nvme_vmm_start(o: NvmeVmmOptions): NvmeVmm {
  const bar0 = o.bar0 ?? NVME_BAR0;
  const vectors = o.vectors ?? 0;
  const eventfds: Record<string, number> = {};
  const ours: number[] = [];
  for (let v = 0; v < vectors; v++) {
    const efd = eventfd();
    kvm_assign_irqfd(o.vm, (o.gsiBase ?? 0) + v, efd);
    eventfds[`irq${v}`] = efd;
    ours.push(efd);
  }
  const regions: RegionSpec[] = [];
  if (o.path === 'ioregionfd') {
    regions.push({ guest_paddr: bar0, memory_size: DOORBELLS, user_data: 0n });
    regions.push({ guest_paddr: bar0 + DOORBELLS, memory_size: NVME_BAR0_SIZE - DOORBELLS, flags: KVM_IOREGION_POSTED_WRITES, user_data: DOORBELLS });
  } else if (o.path === 'ioeventfd') {
    const q = o.ioQueues ?? 4;
    const db = eventfd();
    ours.push(db);
    eventfds.doorbell = db;
    regions.push({ guest_paddr: bar0, memory_size: DOORBELLS, user_data: 0n });
    // The admin queue's pair stays on ioregionfd (its values are not shadowed), as do doorbells past the I/O queues.
    regions.push({ guest_paddr: bar0 + DOORBELLS, memory_size: 8n, flags: KVM_IOREGION_POSTED_WRITES, user_data: DOORBELLS });
    const rest = DOORBELLS + 8n * BigInt(q + 1);
    regions.push({ guest_paddr: bar0 + rest, memory_size: NVME_BAR0_SIZE - rest, flags: KVM_IOREGION_POSTED_WRITES, user_data: rest });
    for (let i = 1; i <= q; i++) {
      vm_ioeventfd(o.vm, { addr: bar0 + DOORBELLS + 8n * BigInt(i), len: 4, fd: db });
      vm_ioeventfd(o.vm, { addr: bar0 + DOORBELLS + 8n * BigInt(i) + 4n, len: 4, fd: db });
    }
  }
  const task = spawn_device_task({
    device: 'nvme', config: o.config ?? {}, memory: o.vm, eventfds,
    ...(o.path === 'exit' ? { channels: ['seqpacket'] } : { vm: o.vm, regions }),
  });
  // KVM and the task hold their own references now.
  ours.forEach(closeQuietly);
  if (o.path !== 'exit') task.closeChannelFds();
  const forwarded = { reads: 0, writes: 0, doorbells: 0 };
  const ch = task.channels[0];
  const cmd = new Uint8Array(IOREGIONFD_MSG_SIZE);
  const cmdView = new DataView(cmd.buffer);
  const resp = new Uint8Array(2 * IOREGIONFD_MSG_SIZE);
  const respView = new DataView(resp.buffer);
  const send = (posted: boolean) => {
    if (writeRaw(ch.write_fd, cmd, IOREGIONFD_MSG_SIZE, true) !== IOREGIONFD_MSG_SIZE) TEST_FAIL('forwarding an NVMe BAR0 access: the device task is gone');
    if (!posted && readRaw(ch.read_fd, resp, resp.length) !== IOREGIONFD_MSG_SIZE) TEST_FAIL('the NVMe device task did not answer a forwarded access');
  };
  return {
    task, path: o.path, bar0, forwarded,
    handleExit(vcpu) {
      if (o.path !== 'exit' || exit_reason(vcpu) !== KVM_EXIT_MMIO) return false;
      const m = run_mmio(vcpu);
      const off = m.physAddr - bar0;
      if (off < 0n || off >= NVME_BAR0_SIZE) return false;
      if (!m.isWrite) {
        encodeCmdFields('v3', cmdView, 0, IOREGIONFD_CMD_READ, m.len, true, 0n, off, 0n);
        send(false);
        le_store(m.data, m.len, decodeResp(respView, 0));
        forwarded.reads++;
        return true;
      }
      const doorbell = off >= DOORBELLS;
      encodeCmdFields('v3', cmdView, 0, IOREGIONFD_CMD_WRITE, m.len, !doorbell, 0n, off, le_value(m.data, m.len));
      send(doorbell);
      if (doorbell) forwarded.doorbells++;
      else forwarded.writes++;
      return true;
    },
    async stop(timeoutMs?: number) {
      return task.stop(timeoutMs);
    },
  };
}
