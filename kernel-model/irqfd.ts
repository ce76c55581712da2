// KVM_IRQFD (virt/kvm/eventfd.c): an eventfd whose writes raise a GSI, so a device task can interrupt
// the guest without the VMM; with KVM_IRQFD_FLAG_RESAMPLE the GSI stays asserted until the guest's
// EOI, which is then reported on the resamplefd.
//
// The main thread watches each irqfd's eventfd with uv_poll (koffi.node.poll), reads (resets) the
// counter when it turns readable, and drives the line in the irqchip. Errnos and their order were
// measured on a real /dev/kvm (x86, 6.18): bad flags EINVAL; deassign works without an irqchip and
// succeeds when nothing matched; assign without an irqchip EINVAL (before the fd is looked at); fd
// EBADF / not an eventfd EINVAL; then the resamplefd likewise; an eventfd already used by an irqfd of
// any VM EBUSY; a GSI without a route is accepted (it never fires).

import koffi from 'koffi';
import { EBUSY, EINVAL } from '../proto/errno';
import {
  IRQFD, KVM_CAP_IRQFD, KVM_CAP_IRQFD_RESAMPLE, KVM_IRQFD, KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE,
} from '../proto/kvm-uapi';
import { closeQuietly, dup, eventfdRead, getStatusFlags, O_NONBLOCK, PollSet, POLLIN, sameFile, setNonBlocking, writeRaw } from '../proto/os';
import { takeEventfd } from './ioeventfd';
import { Irqchip, irqchipOf } from './irqchip';
import { SOURCE_RESAMPLE, SOURCE_USER } from './irqchip-state';
import type { KvmFeature } from './kvm';
import { fail, ReceivedFds, Reply } from './server';
import type { Vm } from './vm';

interface Irqfd {
  vm: Vm;
  gsi: number;
  /** The kernel-model's reference to the eventfd. */
  fd: number;
  resamplefd: number | undefined;
  watcher: ReturnType<typeof koffi.node.poll>;
}

/** Every live irqfd of this kernel-model (all VMs): an eventfd may back only one (EBUSY). */
const allIrqfds = new Set<Irqfd>();
const readable = new PollSet(1);
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

function irqfdsOf(vm: Vm): Irqfd[] {
  return [...allIrqfds].filter((i) => i.vm === vm);
}

/** KVM_IRQFD: flags are checked first, then DEASSIGN picks the path (kvm_irqfd). */
function irqfdIoctl(vm: Vm, data: Buffer, fds: ReceivedFds): Reply {
  const fdNumber = data.readInt32LE(IRQFD.fd);
  const gsi = data.readUInt32LE(IRQFD.gsi);
  const flags = data.readUInt32LE(IRQFD.flags);
  const resampleNumber = data.readInt32LE(IRQFD.resamplefd);
  const known = KVM_IRQFD_FLAG_DEASSIGN | KVM_IRQFD_FLAG_RESAMPLE;
  if (flags & ~known) throw fail(EINVAL, `unknown kvm_irqfd flags 0x${(flags & ~known).toString(16)}`);
  if (flags & KVM_IRQFD_FLAG_DEASSIGN) return deassign(vm, fds, fdNumber, gsi);
  return assign(vm, fds, fdNumber, gsi, flags & KVM_IRQFD_FLAG_RESAMPLE ? resampleNumber : undefined);
}

function assign(vm: Vm, fds: ReceivedFds, fdNumber: number, gsi: number, resampleNumber: number | undefined): Reply {
  // kvm_arch_irqfd_allowed: an in-kernel irqchip is needed (for resample too).
  const chip = irqchipOf(vm);
  if (!chip) throw fail(EINVAL, `KVM_IRQFD${resampleNumber !== undefined ? ' with RESAMPLE' : ''} needs an irqchip (KVM_CREATE_IRQCHIP)`);
  const fd = takeEventfd(fds, fdNumber, 'kvm_irqfd.fd');
  let resamplefd: number | undefined;
  try {
    if (resampleNumber !== undefined) {
      // One fd may be both (the client attaches it once).
      resamplefd = resampleNumber === fdNumber ? dup(fd) : takeEventfd(fds, resampleNumber, 'kvm_irqfd.resamplefd');
    }
    for (const other of allIrqfds) {
      if (sameFile(other.fd, fd)) {
        throw fail(EBUSY, `eventfd ${fdNumber} already backs an irqfd (GSI ${other.gsi}${other.vm === vm ? '' : ' of another VM'})`);
      }
    }
  } catch (e) {
    closeQuietly(fd);
    if (resamplefd !== undefined) closeQuietly(resamplefd);
    throw e;
  }
  const irqfd = { vm, gsi, fd, resamplefd } as Irqfd;
  // uv_poll sets O_NONBLOCK on the open file description, which the caller shares: put it back.
  const flags = getStatusFlags(fd);
  irqfd.watcher = koffi.node.poll(fd, { readable: true, writable: false, disconnect: false }, () => fire(chip, irqfd));
  setNonBlocking(fd, (flags & O_NONBLOCK) !== 0);
  allIrqfds.add(irqfd);
  if (resamplefd !== undefined) {
    chip.setResample(gsi, true);
    chip.onAck((acked) => notifyResamplers(vm, acked));
  }
  return { ret: 0 };
}

/** The eventfd became readable: reset its counter and raise the GSI (a pulse, or a level until EOI). */
function fire(chip: Irqchip, irqfd: Irqfd): void {
  if (!allIrqfds.has(irqfd)) return;
  // The fd may be in blocking mode; only read what poll says is there.
  readable.set(0, irqfd.fd, POLLIN);
  if (readable.wait(1, 0) === 0 || !(readable.revents(0) & POLLIN)) return;
  if (!eventfdRead(irqfd.fd)) return;
  if (irqfd.resamplefd !== undefined) {
    chip.setIrq(irqfd.gsi, SOURCE_RESAMPLE, true);
  } else {
    chip.setIrq(irqfd.gsi, SOURCE_USER, true);
    chip.setIrq(irqfd.gsi, SOURCE_USER, false);
  }
}

/** EOIs of GSIs with resamplers (irqfd_resampler_ack): the line is already down; tell each resamplefd. */
function notifyResamplers(vm: Vm, acked: number): void {
  for (const i of irqfdsOf(vm)) {
    if (i.resamplefd !== undefined && i.gsi < 32 && acked & (1 << i.gsi)) writeRaw(i.resamplefd, ONE, 8);
  }
}

/** kvm_irqfd_deassign: the eventfd must resolve; every irqfd with it and this GSI goes; never ENOENT. */
function deassign(vm: Vm, fds: ReceivedFds, fdNumber: number, gsi: number): Reply {
  const fd = takeEventfd(fds, fdNumber, 'kvm_irqfd.fd');
  try {
    for (const i of irqfdsOf(vm)) if (i.gsi === gsi && sameFile(i.fd, fd)) release(i);
  } finally {
    closeQuietly(fd);
  }
  return { ret: 0 };
}

/** Stop watching and drop the references; the last resampler of a GSI lowers its level. */
function release(irqfd: Irqfd): void {
  allIrqfds.delete(irqfd);
  irqfd.watcher.close();
  closeQuietly(irqfd.fd);
  if (irqfd.resamplefd === undefined) return;
  closeQuietly(irqfd.resamplefd);
  if (irqfdsOf(irqfd.vm).some((i) => i.gsi === irqfd.gsi && i.resamplefd !== undefined)) return;
  const chip = irqchipOf(irqfd.vm);
  chip?.setResample(irqfd.gsi, false);
  chip?.setIrq(irqfd.gsi, SOURCE_RESAMPLE, false);
}

export const irqfd: KvmFeature = {
  caps: () => ({ [KVM_CAP_IRQFD]: 1, [KVM_CAP_IRQFD_RESAMPLE]: 1 }),
  ioctls: { [KVM_IRQFD]: (vm, req, fds) => irqfdIoctl(vm, req.data, fds) },
  destroy: (vm) => irqfdsOf(vm).forEach(release),
};
