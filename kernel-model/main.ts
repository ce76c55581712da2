// Process entry of the kernel-model ("kvm.ko"): serves the system fd it was started with on fd 3.
//
// Usage: node kernel-model/main.js [--ioregionfd-cap N] [--set-ioregion-ioctl N]
// It exits when the system fd closes, and dies with its parent (PR_SET_PDEATHSIG), so a VMM that
// crashes never leaves it behind.

import { dieWithParent, installWakeSignal } from '../proto/os';
import { FEATURES } from './features';
import { KvmOptions, KvmSystem } from './kvm';
import { KVM_CAP_IOREGIONFD, KVM_SET_IOREGION } from '../proto/kvm-uapi';

const SYSTEM_FD = 3;

function parseOptions(argv: string[]): KvmOptions {
  const opts: KvmOptions = { ioregionfdCap: KVM_CAP_IOREGIONFD, setIoregionIoctl: KVM_SET_IOREGION };
  for (let i = 0; i < argv.length; i++) {
    const value = Number(argv[i + 1]);
    if (argv[i] === '--ioregionfd-cap' && Number.isInteger(value)) opts.ioregionfdCap = value;
    else if (argv[i] === '--set-ioregion-ioctl' && Number.isInteger(value)) opts.setIoregionIoctl = value >>> 0;
    else {
      process.stderr.write(`kernel-model: bad argument '${argv[i]}'\n`);
      process.exit(2);
    }
    i++;
  }
  return opts;
}

dieWithParent();
// Signals are how vCPU threads are woken out of blocking syscalls (kernel-model/vcpu.ts).
installWakeSignal();
new KvmSystem(SYSTEM_FD, FEATURES, parseOptions(process.argv.slice(2)), () => process.exit(0));
