// A VM: its fd's ioctls, memslots, vCPUs and the devices on its buses, owned by the main thread.
//
// The main thread validates every change (so errnos and ordering match the kernel) and then publishes
// it to the running vCPU threads, each of which gets its own dup of any fd involved.

import { IoctlRequest } from '../proto/control';
import { EEXIST, EFAULT, EINVAL, ENOMEM, ENOTTY } from '../proto/errno';
import {
  ENABLE_CAP, ioctlDir, ioctlSize, IOC_WRITE, KVM_CHECK_EXTENSION, KVM_CREATE_VCPU, KVM_ENABLE_CAP,
  KVM_MAX_VCPU_IDS, KVM_MAX_VCPUS, KVM_MEM_READONLY, KVM_SET_USER_MEMORY_REGION, MEMREGION, NR_IOBUS_DEVS,
} from '../proto/kvm-uapi';
import { closeQuietly, dup, fileSize, sameFile } from '../proto/os';
import { Backing, inspectBacking, Memslots, probeMapping, sealBacking } from './memslots';
import { fail, Handler, ReceivedFds, Reply, SocketServer } from './server';
import { collectGarbage } from './idle-gc';
import { VcpuHandle } from './vcpu';
import { releaseUpdate, type VcpuConfig, type VcpuUpdate } from './vcpu-contract';
import type { BusName } from './io-bus';
import type { DeviceDesc, DeviceFields, DeviceInfo } from './device-desc';

/** A device as the VM keeps it: the description its vCPUs get, and the fds the VM holds for it. */
export interface VmDevice {
  desc: DeviceInfo;
  fds: number[];
}

/**
 * Shared blocks of destroyed VMs, by size, kept for the next VMs. A block is freed only once every
 * vCPU thread that saw it has garbage-collected its handle, and threads collect rarely: with a new
 * block per VM (the ioregionfd block is ~1 MB) a long-lived kernel-model held dozens of dead ones.
 */
const spareBlocks = new Map<number, SharedArrayBuffer[]>();
const MAX_SPARE_BLOCKS = 8;

function takeBlock(bytes: number): SharedArrayBuffer {
  const b = spareBlocks.get(bytes)?.pop();
  if (!b) return new SharedArrayBuffer(bytes);
  new Uint8Array(b).fill(0);
  return b;
}

/** Keep a block no thread uses any more (its VM's vCPU threads have ended) for another VM. */
function giveBackBlock(b: SharedArrayBuffer): void {
  let list = spareBlocks.get(b.byteLength);
  if (!list) spareBlocks.set(b.byteLength, (list = []));
  if (list.length < MAX_SPARE_BLOCKS) list.push(b);
}

/** A VM ioctl handler that a feature (ioeventfd, ioregionfd, irqfd) adds to the VM. */
export type VmIoctl = (vm: Vm, req: IoctlRequest, fds: ReceivedFds) => Reply;

/** A feature's hooks: its ioctls, its KVM_ENABLE_CAP capabilities, and cleanup at VM destruction. */
export interface VmFeature {
  ioctls?: Record<number, VmIoctl>;
  enableCap?: Record<number, (vm: Vm, args: bigint[]) => void>;
  destroy?: (vm: Vm) => void;
}

export class Vm {
  readonly memslots = new Memslots();
  private readonly backings: Backing[] = [];
  private nextBackingKey = 1;
  /** Bumped by every memslot change; vCPU threads report the generation they applied. */
  private memslotGen = 0;
  readonly vcpus = new Map<number, VcpuHandle>();
  readonly config: VcpuConfig;
  /** Devices in registration order (the order vCPU threads must register them in too). */
  readonly devices = new Map<number, VmDevice>();
  private nextDeviceKey = 1;
  /** Per-feature state, keyed by feature name. */
  readonly state = new Map<string, unknown>();
  private readonly sharedBuffers = new Map<string, SharedArrayBuffer>();
  private readonly server: SocketServer;
  private destroyed = false;

  constructor(
    fd: number,
    private readonly features: VmFeature[],
    private readonly checkExtension: (cap: bigint) => number,
    /** User-chosen ioctl numbers mapped to the model's (e.g. another KVM_SET_IOREGION number). */
    private readonly ioctlAliases: Map<number, number>,
    private readonly onDestroyed: (vm: Vm) => void,
    /** How long vCPUs spin for an ioregionfd reply (the kernel-model's --ioregionfd-poll-ns). */
    pollNs: number,
  ) {
    this.config = { wire: 'v3', failureExit: false, irqchip: false, pollNs };
    this.server = new SocketServer(fd, this.handle, () => void this.destroy());
  }

  private readonly handle: Handler = (req, fds) => {
    req.request = this.ioctlAliases.get(req.request) ?? req.request;
    const handler = this.ioctlHandler(req.request);
    // x86's kvm_arch_vm_ioctl answers unknown ioctls with ENOTTY, whatever their argument (measured).
    if (!handler) throw fail(ENOTTY, `unknown VM ioctl 0x${req.request.toString(16)}`);
    const size = ioctlSize(req.request);
    // copy_from_user of the argument struct: a short buffer faults.
    if (ioctlDir(req.request) & IOC_WRITE && req.data.length < size) {
      throw fail(EFAULT, `argument of ioctl 0x${req.request.toString(16)} is ${req.data.length} bytes, needs ${size}`);
    }
    return handler(req, fds);
  };

  /** The handler of a VM ioctl the model knows (its own, then the features'), or undefined. */
  private ioctlHandler(request: number): Handler | undefined {
    switch (request) {
      case KVM_CREATE_VCPU:
        return (req) => this.createVcpu(req.arg);
      case KVM_SET_USER_MEMORY_REGION:
        return (req, fds) => this.setMemoryRegion(req.data, fds);
      case KVM_CHECK_EXTENSION:
        return (req) => ({ ret: this.checkExtension(req.arg) });
      case KVM_ENABLE_CAP:
        return (req) => this.enableCap(req.data);
    }
    for (const f of this.features) {
      const h = f.ioctls?.[request];
      if (h) return (req, fds) => h(this, req, fds);
    }
    return undefined;
  }

  /** KVM_CREATE_VCPU, with kvm_vm_ioctl_create_vcpu's checks in its order. */
  private createVcpu(arg: bigint): Reply {
    if (arg >= BigInt(KVM_MAX_VCPU_IDS)) throw fail(EINVAL, `vcpu id ${arg} >= KVM_MAX_VCPU_IDS (${KVM_MAX_VCPU_IDS})`);
    const id = Number(arg);
    if (this.vcpus.size >= KVM_MAX_VCPUS) throw fail(EINVAL, `VM already has KVM_MAX_VCPUS (${KVM_MAX_VCPUS}) vCPUs`);
    if (this.vcpus.has(id)) throw fail(EEXIST, `vcpu id ${id} already exists`);
    const v = new VcpuHandle(id, () => this.initialState());
    this.vcpus.set(id, v);
    return { ret: 0, fds: v.replyFds() };
  }

  /** KVM_SET_USER_MEMORY_REGION: the memfd travels beside the ioctl; userspace_addr is the offset in it. */
  private setMemoryRegion(data: Buffer, fds: ReceivedFds): Reply {
    const m = {
      slot: data.readUInt32LE(MEMREGION.slot),
      flags: data.readUInt32LE(MEMREGION.flags),
      guestPhysAddr: data.readBigUInt64LE(MEMREGION.guest_phys_addr),
      memorySize: data.readBigUInt64LE(MEMREGION.memory_size),
      userspaceAddr: data.readBigUInt64LE(MEMREGION.userspace_addr),
    };
    let backing: Backing | undefined;
    try {
      const checked = this.memslots.check(m, () => (backing = this.backingFor(fds)));
      if (checked.change === 'none') return { ret: 0 };
      if (backing) {
        probeMapping(backing, m.userspaceAddr, m.memorySize, (m.flags & KVM_MEM_READONLY) !== 0);
        // Only now, with every check passed: a refused request leaves the VMM's memfd as it was.
        sealBacking(backing, m.userspaceAddr + m.memorySize);
      }
      const { old, undo } = this.memslots.apply(m, checked.change, backing);
      // Every vCPU gets the new list or none does: build all the updates (fd dups) first.
      let updates: Map<VcpuHandle, VcpuUpdate>;
      try {
        updates = this.buildForRunning(() => this.memslotUpdate(this.memslotGen + 1));
      } catch (e) {
        undo();
        throw fail(ENOMEM, `cannot hand the new memslots to the vCPU threads: ${(e as Error).message}`);
      }
      if (old && !this.memslots.uses(old.backing)) this.dropBacking(old.backing);
      this.memslotGen++;
      for (const [v, u] of updates) v.postBuilt(u);
      // As KVM's synchronize_srcu: when the ioctl returns, no vCPU still uses the old slots.
      for (const v of this.vcpus.values()) v.waitMemslots(this.memslotGen);
      return { ret: 0 };
    } finally {
      // A memfd that came with a refused (or deleting) request is not kept.
      if (backing && !this.memslots.uses(backing)) this.dropBacking(backing);
    }
  }

  /**
   * The attached memfd as a Backing, reusing an existing one for the same file (kcmp) so fds don't
   * pile up. A new one must be a memfd the model can seal against shrinking (sealed once a slot of it
   * is accepted): a slot's pages must stay there for as long as vCPUs and devices map them (a
   * truncated file would SIGBUS the kernel-model).
   */
  private backingFor(fds: ReceivedFds): Backing | undefined {
    const fd = fds.takeFirst();
    if (fd === undefined) return undefined;
    for (const b of this.backings) {
      if (sameFile(b.fd, fd)) {
        closeQuietly(fd);
        b.size = fileSize(b.fd);
        return b;
      }
    }
    try {
      const b = { key: this.nextBackingKey++, fd, ...inspectBacking(fd) };
      this.backings.push(b);
      return b;
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
  }

  private dropBacking(b: Backing): void {
    const i = this.backings.indexOf(b);
    if (i < 0) return;
    this.backings.splice(i, 1);
    closeQuietly(b.fd);
  }

  /** The full memslot list for one vCPU thread, with a fresh dup of the memfd for each slot it maps. */
  private memslotUpdate(gen = this.memslotGen): VcpuUpdate {
    const slots = this.memslots.slots.map((s) => ({
      key: s.key, gpa: s.gpa, size: Number(s.size), offset: s.offset, readonly: (s.flags & KVM_MEM_READONLY) !== 0,
    }));
    const fds: [number, number][] = [];
    try {
      for (const s of this.memslots.slots) fds.push([s.key, dup(s.backing.fd)]);
    } catch (e) {
      fds.forEach(([, fd]) => closeQuietly(fd));
      throw e;
    }
    return { type: 'memslots', slots, fds, gen };
  }

  /** One update per running vCPU thread, all built before any is sent; on failure none leaks. */
  private buildForRunning(build: () => VcpuUpdate): Map<VcpuHandle, VcpuUpdate> {
    const out = new Map<VcpuHandle, VcpuUpdate>();
    try {
      for (const v of this.vcpus.values()) if (v.running) out.set(v, build());
    } catch (e) {
      for (const u of out.values()) releaseUpdate(u);
      throw e;
    }
    return out;
  }

  /**
   * A feature's VM-wide shared memory (locks, counters), created on first use and handed to every
   * vCPU thread, now and later.
   */
  sharedBuffer(name: string, bytes: number): SharedArrayBuffer {
    let b = this.sharedBuffers.get(name);
    if (!b) {
      const buffer = takeBlock(bytes);
      this.sharedBuffers.set(name, buffer);
      this.publish(() => ({ type: 'shared', name, buffer }));
      b = buffer;
    }
    return b;
  }

  private initialState(): VcpuUpdate[] {
    return [
      ...[...this.sharedBuffers].map(([name, buffer]): VcpuUpdate => ({ type: 'shared', name, buffer })),
      { type: 'config', config: { ...this.config } },
      this.memslotUpdate(),
      { type: 'devices', add: [...this.devices.values()].map((d) => this.describe(d)), remove: [] },
    ];
  }

  private describe(d: VmDevice): DeviceDesc {
    return { ...d.desc, fds: d.fds.map(dup) };
  }

  /** Send an update to every running vCPU thread (each build() call dups fds for that thread). */
  publish(build: () => VcpuUpdate): void {
    for (const v of this.vcpus.values()) v.post(build);
  }

  /** Add a device the caller validated; the VM takes ownership of its fds. Returns its key. */
  addDevice(desc: DeviceFields, fds: number[]): number {
    const key = this.nextDeviceKey++;
    const d: VmDevice = { desc: { ...desc, key }, fds };
    this.devices.set(key, d);
    this.publish(() => ({ type: 'devices', add: [this.describe(d)], remove: [] }));
    return key;
  }

  /** Remove a device and release the VM's fds for it (each vCPU thread releases its own dups). */
  removeDevice(key: number): void {
    const d = this.devices.get(key);
    if (!d) return;
    this.devices.delete(key);
    this.publish(() => ({ type: 'devices', add: [], remove: [key] }));
    d.fds.forEach(closeQuietly);
  }

  /**
   * kvm_io_bus_register_dev's limit: a bus holding NR_IOBUS_DEVS devices that are not ioeventfds is
   * full for every further registration (ioeventfds included).
   */
  busFull(bus: BusName): boolean {
    let n = 0;
    for (const d of this.devices.values()) if (d.desc.bus === bus && d.desc.kind !== 'ioeventfd') n++;
    return n > NR_IOBUS_DEVS - 1;
  }

  /** Devices on `bus` as the VM holds them (for collision checks). */
  devicesOn(bus: BusName): VmDevice[] {
    return [...this.devices.values()].filter((d) => d.desc.bus === bus);
  }

  setConfig(c: Partial<VcpuConfig>): void {
    Object.assign(this.config, c);
    this.publish(() => ({ type: 'config', config: { ...c } }));
  }

  /** KVM_ENABLE_CAP on the VM: flags must be 0; unknown capabilities are EINVAL. */
  private enableCap(data: Buffer): Reply {
    const cap = data.readUInt32LE(ENABLE_CAP.cap);
    const flags = data.readUInt32LE(ENABLE_CAP.flags);
    const args = [0, 1, 2, 3].map((i) => data.readBigUInt64LE(ENABLE_CAP.args + 8 * i));
    if (flags) throw fail(EINVAL, `kvm_enable_cap.flags must be 0, got 0x${flags.toString(16)}`);
    for (const f of this.features) {
      const h = f.enableCap?.[cap];
      if (h) {
        h(this, args);
        return { ret: 0 };
      }
    }
    throw fail(EINVAL, `capability ${cap} cannot be enabled on this VM`);
  }

  /** True once destroy() began: vCPU handles may be gone, so features must stop signalling them. */
  get destroying(): boolean {
    return this.destroyed;
  }

  /** Destroy the VM (its fd closed, or the system fd closed): stop vCPUs, release every fd. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    this.server.close();
    await Promise.all([...this.vcpus.values()].map((v) => v.destroy()));
    for (const f of this.features) f.destroy?.(this);
    for (const d of this.devices.values()) d.fds.forEach(closeQuietly);
    this.devices.clear();
    for (const b of this.backings) closeQuietly(b.fd);
    this.backings.length = 0;
    // Every vCPU thread of this VM has ended (or was terminated): its blocks can serve another VM.
    for (const b of this.sharedBuffers.values()) giveBackBlock(b);
    this.sharedBuffers.clear();
    this.onDestroyed(this);
    collectGarbage();
  }
}
