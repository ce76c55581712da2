// The VMM the process-kill campaign kills: a small VM with a device task (and, if asked, a QEMU
// device) and a guest that keeps the device busy until the process is killed. It reports each pid on
// stdout as soon as that process exists, one JSON object per line, so the campaign can kill any of
// them. If the kernel-model dies under it, KVM_RUN fails and it exits 1, as a VMM should.
//
// Usage: node process_kill_vmm.js [--qemu]

import { Kvm } from '../../vmm';
import { spawn_qemu_device } from '../kvm/lib/qemu_device';
import { spawnDeviceTask } from '../../vmm';
import { churn_guest } from './churn_guest';

const RAM_BYTES = 64 * 1024;
const DEVICE_GPA = 0xd000_0000n;
const QEMU_BAR_GPA = 0xd010_0000n;
const QEMU_BAR_SIZE = 0x1000n;

/** One line the campaign reads: which process now exists, or that the guest runs. */
export type VmmReport = { kernelModel: number } | { deviceTask: number } | { qemuTask: number } | { running: true };

function report(r: VmmReport): void {
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

function main(): void {
  const kvm = Kvm.open();
  report({ kernelModel: kvm.pid });
  const vm = kvm.createVm();
  vm.addMemory(0, 0n, RAM_BYTES);
  const task = spawnDeviceTask({ device: 'testdev', vm, memory: vm, regions: [{ guest_paddr: DEVICE_GPA, memory_size: 8n }] });
  task.closeChannelFds();
  report({ deviceTask: task.pid });
  if (process.argv.includes('--qemu')) {
    const qemu = spawn_qemu_device({ vm, device: 'pci-testdev', bars: { 0: { gpa: QEMU_BAR_GPA, size: QEMU_BAR_SIZE } } });
    qemu.closeChannelFds();
    report({ qemuTask: qemu.pid });
  }
  const vcpu = vm.createVcpu(0);
  vcpu.setEntry(churn_guest);
  // loops 0: the guest writes RAM and the device until the process is killed.
  vcpu.setArgs(0n, DEVICE_GPA, 0n, 0x1000n, 0n);
  report({ running: true });
  const exit = vcpu.run();
  process.stderr.write(`process_kill_vmm: the busy guest stopped: ${JSON.stringify(exit)}\n`);
  process.exit(1);
}

if (require.main === module) main();
