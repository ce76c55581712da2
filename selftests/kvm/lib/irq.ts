// Interrupts from the VMM side: KVM_CREATE_IRQCHIP, KVM_IRQ_LINE and KVM_IRQFD (api.rst 4.24, 4.25,
// 4.75), named as in kvm_util.h (vm_create_irqchip, kvm_irq_line, kvm_irqfd, kvm_assign_irqfd...).

import { IoctlResult } from '../../../proto/control';
import { errnoName } from '../../../proto/errno';
import { KVM_CREATE_IRQCHIP, KVM_IRQ_LINE, KVM_IRQFD, KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE } from '../../../proto/kvm-uapi';
import { kvmIrqfd, kvmIrqLevel } from '../../../vmm/structs';
import { __vm_ioctl, KvmVm, vm_ioctl } from './kvm_util';
import { TEST_ASSERT } from './test_util';

/** KVM_CREATE_IRQCHIP, raw. */
export function __vm_create_irqchip(vm: KvmVm): IoctlResult {
  return __vm_ioctl(vm, KVM_CREATE_IRQCHIP, 0);
}

/** KVM_CREATE_IRQCHIP that must succeed (before any vCPU is added). */
export function vm_create_irqchip(vm: KvmVm): void {
  vm_ioctl(vm, KVM_CREATE_IRQCHIP, 0, 'KVM_CREATE_IRQCHIP');
}

/** struct kvm_irq_level. */
export const kvm_irq_level = kvmIrqLevel;

/** KVM_IRQ_LINE, raw. */
export function _kvm_irq_line(vm: KvmVm, irq: number, level: number): IoctlResult {
  return __vm_ioctl(vm, KVM_IRQ_LINE, kvm_irq_level(irq, level));
}

/** KVM_IRQ_LINE that must succeed. */
export function kvm_irq_line(vm: KvmVm, irq: number, level: number): void {
  vm_ioctl(vm, KVM_IRQ_LINE, kvm_irq_level(irq, level), 'KVM_IRQ_LINE');
}

/** struct kvm_irqfd (32 bytes). */
export function kvm_irqfd_struct(gsi: number, eventfd: number, flags: number, resamplefd = 0): Buffer {
  return kvmIrqfd({ gsi, fd: eventfd, flags, resamplefd });
}

/** KVM_IRQFD, raw. */
export function __kvm_irqfd(vm: KvmVm, gsi: number, eventfd: number, flags: number, resamplefd = 0): IoctlResult {
  return __vm_ioctl(vm, KVM_IRQFD, kvm_irqfd_struct(gsi, eventfd, flags, resamplefd));
}

/** KVM_IRQFD that must succeed. */
export function kvm_irqfd(vm: KvmVm, gsi: number, eventfd: number, flags: number, resamplefd = 0): void {
  const r = __kvm_irqfd(vm, gsi, eventfd, flags, resamplefd);
  TEST_ASSERT(r.ret === 0, `KVM_IRQFD gsi ${gsi} fd ${eventfd} flags 0x${flags.toString(16)} failed: errno ${r.errno} (${errnoName(r.errno)}): ${r.detail}`, r.errno);
}

export function kvm_assign_irqfd(vm: KvmVm, gsi: number, eventfd: number): void {
  kvm_irqfd(vm, gsi, eventfd, 0);
}

/** A resampling irqfd: the GSI stays asserted until the guest's EOI, which signals resamplefd. */
export function kvm_assign_irqfd_resample(vm: KvmVm, gsi: number, eventfd: number, resamplefd: number): void {
  kvm_irqfd(vm, gsi, eventfd, KVM_IRQFD_FLAG_RESAMPLE, resamplefd);
}

export function kvm_deassign_irqfd(vm: KvmVm, gsi: number, eventfd: number): void {
  kvm_irqfd(vm, gsi, eventfd, KVM_IRQFD_FLAG_DEASSIGN);
}
