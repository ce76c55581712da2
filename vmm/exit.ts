// VcpuExit: why KVM_RUN returned, decoded from kvm_run into one discriminated union (the exits this
// model produces; api.rst 5, struct kvm_run). Data fields are live views of the kvm_run page: fill a
// read's `data` before the next run() to complete it.

import {
  KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IOREGIONFD_FAILURE, KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN, RUN,
} from '../proto/kvm-uapi';

export type VcpuExit =
  /** KVM_EXIT_MMIO: an access no device in the kernel took. */
  | { reason: 'mmio'; physAddr: bigint; len: number; isWrite: boolean; data: Uint8Array }
  /** KVM_EXIT_IO: port I/O no device took; `data` holds count * size bytes. */
  | { reason: 'io'; direction: 'in' | 'out'; port: number; size: number; count: number; data: Uint8Array }
  /** KVM_EXIT_IOREGIONFD_FAILURE (opt-in): a device failed the access with `errno`. */
  | { reason: 'ioregionfd_failure'; addr: bigint; len: number; isWrite: boolean; isPio: boolean; userData: bigint; errno: number; data: Uint8Array }
  /** KVM_EXIT_INTR, or KVM_RUN returning EINTR (a kick, immediate_exit). */
  | { reason: 'intr' }
  /** KVM_EXIT_HLT: hlt without an irqchip. */
  | { reason: 'hlt' }
  /** KVM_EXIT_SHUTDOWN: the guest code returned. */
  | { reason: 'shutdown'; detail: string }
  /** KVM_EXIT_INTERNAL_ERROR: the guest code threw; `detail` has the exception and its stack. */
  | { reason: 'internal_error'; suberror: number; detail: string }
  | { reason: 'unknown'; exitReason: number };

/** Decode the exit in a kvm_run page (`detail`: the KVM_RUN reply's text). */
export function decodeExit(run: DataView, runBytes: Uint8Array, detail: string): VcpuExit {
  const reason = run.getUint32(RUN.exit_reason, true);
  switch (reason) {
    case KVM_EXIT_MMIO:
      return {
        reason: 'mmio', physAddr: run.getBigUint64(RUN.mmio_phys_addr, true), len: run.getUint32(RUN.mmio_len, true),
        isWrite: run.getUint8(RUN.mmio_is_write) !== 0, data: runBytes.subarray(RUN.mmio_data, RUN.mmio_data + 8),
      };
    case KVM_EXIT_IO: {
      const size = run.getUint8(RUN.io_size);
      const count = run.getUint32(RUN.io_count, true);
      const at = Number(run.getBigUint64(RUN.io_data_offset, true));
      return {
        reason: 'io', direction: run.getUint8(RUN.io_direction) === KVM_EXIT_IO_IN ? 'in' : 'out', port: run.getUint16(RUN.io_port, true),
        size, count, data: runBytes.subarray(at, at + size * count),
      };
    }
    case KVM_EXIT_IOREGIONFD_FAILURE:
      return {
        reason: 'ioregionfd_failure', addr: run.getBigUint64(RUN.iofail_addr, true), len: run.getUint32(RUN.iofail_len, true),
        isWrite: run.getUint8(RUN.iofail_is_write) !== 0, isPio: run.getUint8(RUN.iofail_is_pio) !== 0,
        userData: run.getBigUint64(RUN.iofail_user_data, true), errno: run.getInt32(RUN.iofail_errno, true),
        data: runBytes.subarray(RUN.iofail_data, RUN.iofail_data + 8),
      };
    case KVM_EXIT_INTR:
      return { reason: 'intr' };
    case KVM_EXIT_HLT:
      return { reason: 'hlt' };
    case KVM_EXIT_SHUTDOWN:
      return { reason: 'shutdown', detail };
    case KVM_EXIT_INTERNAL_ERROR:
      return { reason: 'internal_error', suberror: run.getUint32(RUN.internal_suberror, true), detail };
    default:
      return { reason: 'unknown', exitReason: reason };
  }
}
