// Process entry of the kernel-model ("kvm.ko"): serves the system fd it was started with on fd 3.
//
// Usage: node kernel-model/main.js [--ioregionfd-cap N] [--set-ioregion-ioctl N] [--ioregionfd-poll-ns N]
// It exits when the system fd closes, and dies with its parent (PR_SET_PDEATHSIG), so a VMM that
// crashes never leaves it behind.

import { dieWithParent, fdKind, installWakeSignal, isOpen, setDumpable, socketType } from '../proto/os';
import { FEATURES } from './features';
import { KvmOptions, KvmSystem } from './kvm';
import { KVM_CAP_IOREGIONFD, KVM_SET_IOREGION } from '../proto/kvm-uapi';
import { DEFAULT_POLL_NS } from '../proto/spin-poll';

const SYSTEM_FD = 3;

function parseOptions(argv: string[]): KvmOptions {
  const opts: KvmOptions = { ioregionfdCap: KVM_CAP_IOREGIONFD, setIoregionIoctl: KVM_SET_IOREGION, ioregionfdPollNs: DEFAULT_POLL_NS };
  for (let i = 0; i < argv.length; i++) {
    const value = Number(argv[i + 1]);
    if (argv[i] === '--ioregionfd-cap' && Number.isInteger(value)) opts.ioregionfdCap = value;
    else if (argv[i] === '--set-ioregion-ioctl' && Number.isInteger(value)) opts.setIoregionIoctl = value >>> 0;
    else if (argv[i] === '--ioregionfd-poll-ns' && Number.isSafeInteger(value) && value >= 0) opts.ioregionfdPollNs = value;
    else {
      process.stderr.write(`kernel-model: bad argument '${argv[i]}'\n`);
      process.exit(2);
    }
    i++;
  }
  return opts;
}

dieWithParent();
if (socketType(SYSTEM_FD) !== 'seqpacket') {
  // (Started without an fd 3, Node itself opens one there: it is then one of Node's own.)
  const found = !isOpen(SYSTEM_FD) ? 'not open' : socketType(SYSTEM_FD) ? `a ${socketType(SYSTEM_FD)} socket` : `a ${fdKind(SYSTEM_FD)}`;
  process.stderr.write(`kernel-model: fd ${SYSTEM_FD} must be the system socket (AF_UNIX SOCK_SEQPACKET) its VMM passes; found ${found}. Start it through open_kvm_dev_path() (or Kvm.open()).\n`);
  process.exit(2);
}
// No other process of this user may reach into the kernel-model (/proc/<pid>/fd, ptrace): see README "Trust model".
setDumpable(false);
// Signals are how vCPU threads are woken out of blocking syscalls (kernel-model/vcpu.ts).
installWakeSignal();
new KvmSystem(SYSTEM_FD, FEATURES, parseOptions(process.argv.slice(2)), () => process.exit(0));
