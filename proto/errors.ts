// Error classes with stable codes, so callers branch on `code`/`errno`, never on message text.

import { EPROTO, errnoName, strerror } from './errno';

/** A failed ioctl: the kernel-model answered ret -1 with this errno. */
export class KvmError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly ioctl: string;
  constructor(ioctl: string, errno: number, detail?: string) {
    super(`${ioctl} failed, rc: -1 errno: ${errno} (${strerror(errno)})${detail ? `: ${detail}` : ''}`);
    this.name = 'KvmError';
    this.errno = errno;
    this.code = errnoName(errno);
    this.ioctl = ioctl;
  }
}

/** A failed system call in the OS-primitives layer. */
export class SyscallError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  constructor(syscall: string, errno: number) {
    super(`${syscall}: ${strerror(errno)} (${errnoName(errno)})`);
    this.name = 'SyscallError';
    this.errno = errno;
    this.code = errnoName(errno);
    this.syscall = syscall;
  }
}

/** A peer broke a wire or control protocol (short frame, unknown command, garbage). */
export class ProtocolError extends Error {
  readonly errno = EPROTO;
  readonly code = 'EPROTO';
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}
