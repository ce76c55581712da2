// Where a vCPU's guest code comes from: an exported function of a module this process has loaded,
// which the kernel-model's vCPU thread loads again by path (the model's "load the ELF, set RIP").
//
// The rules guest code follows (README "Guest code"):
// - it is an exported function of a CommonJS module (compiled JS) that this process has loaded, so
//   its file can be found; the vCPU thread require()s that file, in the kernel-model process;
// - that module's top-level code must not start the VMM side: guard the program's entry point with
//   `if (require.main === module) main();` (the kernel-model refuses VMM calls on a vCPU thread);
// - it reaches the CPU only through proto/guest-cpu (cpu().read(), ...), each call an instruction
//   boundary where kicks and interrupts are taken; a loop that never calls the CPU cannot be kicked;
// - module state is per vCPU: each vCPU loads the module afresh; share state through guest memory.

import { KvmError } from '../proto/errors';
import { EINVAL } from '../proto/errno';

/** Guest code: an exported function; it gets the argument registers (rdi, rsi, ...) as bigints. */
export type GuestCode = (...args: bigint[]) => unknown;

/** A guest entry point by module file and export name. */
export interface GuestEntry {
  module: string;
  exportName: string;
}

/** The module and export name of a loaded guest function; KvmError EINVAL if no loaded module exports it. */
export function guestEntryOf(fn: GuestCode): GuestEntry {
  for (const [file, mod] of Object.entries(require.cache)) {
    const exp = mod?.exports as Record<string, unknown> | undefined;
    if (!exp || typeof exp !== 'object') continue;
    for (const [name, value] of Object.entries(exp)) {
      if (value === fn) return { module: file, exportName: name };
    }
  }
  throw new KvmError('KVM_EMU_SET_GUEST_ENTRY', EINVAL, `guest code '${fn.name}' is not exported by any loaded module: export it from its module`);
}
