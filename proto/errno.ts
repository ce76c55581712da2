// Linux errno numbers (x86-64) and their names, shared by every role so errors read the same everywhere.

export const EPERM = 1;
export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EIO = 5;
export const ENXIO = 6;
export const E2BIG = 7;
export const EBADF = 9;
export const EAGAIN = 11;
export const ENOMEM = 12;
export const EACCES = 13;
export const EFAULT = 14;
export const EBUSY = 16;
export const EEXIST = 17;
export const ENODEV = 19;
export const EINVAL = 22;
export const EMFILE = 24;
export const ENOTTY = 25;
export const ENOSPC = 28;
export const EPIPE = 32;
export const ERANGE = 34;
export const ENOSYS = 38;
export const EPROTO = 71;
export const EMSGSIZE = 90;
export const EOPNOTSUPP = 95;
export const ECONNRESET = 104;
export const ETIMEDOUT = 110;

const NAMES: Record<number, string> = {
  [EPERM]: 'EPERM', [ENOENT]: 'ENOENT', [ESRCH]: 'ESRCH', [EINTR]: 'EINTR', [EIO]: 'EIO',
  [ENXIO]: 'ENXIO', [E2BIG]: 'E2BIG', [EBADF]: 'EBADF', [EAGAIN]: 'EAGAIN', [ENOMEM]: 'ENOMEM',
  [EACCES]: 'EACCES', [EFAULT]: 'EFAULT', [EBUSY]: 'EBUSY', [EEXIST]: 'EEXIST', [ENODEV]: 'ENODEV',
  [EINVAL]: 'EINVAL', [EMFILE]: 'EMFILE', [ENOTTY]: 'ENOTTY', [ENOSPC]: 'ENOSPC', [EPIPE]: 'EPIPE',
  [ERANGE]: 'ERANGE', [ENOSYS]: 'ENOSYS', [EPROTO]: 'EPROTO', [EMSGSIZE]: 'EMSGSIZE', [EOPNOTSUPP]: 'EOPNOTSUPP',
  [ECONNRESET]: 'ECONNRESET', [ETIMEDOUT]: 'ETIMEDOUT',
};

const MESSAGES: Record<number, string> = {
  [EPERM]: 'Operation not permitted', [ENOENT]: 'No such file or directory', [EINTR]: 'Interrupted system call',
  [EIO]: 'Input/output error', [EBADF]: 'Bad file descriptor', [EAGAIN]: 'Resource temporarily unavailable',
  [ENOMEM]: 'Cannot allocate memory', [EACCES]: 'Permission denied', [EFAULT]: 'Bad address',
  [EBUSY]: 'Device or resource busy', [EEXIST]: 'File exists', [EINVAL]: 'Invalid argument',
  [ENOTTY]: 'Inappropriate ioctl for device', [ENOSPC]: 'No space left on device', [EPIPE]: 'Broken pipe',
  [ENOSYS]: 'Function not implemented', [EPROTO]: 'Protocol error', [EOPNOTSUPP]: 'Operation not supported',
};

/** The kernel's name for an errno value, e.g. 17 -> 'EEXIST'. */
export function errnoName(errno: number): string {
  return NAMES[errno] ?? `E#${errno}`;
}

/** strerror(3) text for an errno value. */
export function strerror(errno: number): string {
  return MESSAGES[errno] ?? `Unknown error ${errno}`;
}
