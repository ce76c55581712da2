// The multi-process QEMU ("MPQemu") message format spoken on the socket of an `x-remote` QEMU: a
// 16-byte header and a command-specific payload, x86-64 little-endian, fds beside it as SCM_RIGHTS.
//
//   header   cmd i32 @0 | 4 bytes padding | size u64 @8 (bytes of payload that follow)
//   PCI_CFGREAD / PCI_CFGWRITE payload (12 bytes): addr u32 @0 | val u32 @4 | len i32 @8
//   BAR_READ / BAR_WRITE payload (24 bytes): addr u64 @0 (absolute: the BAR's base + offset) |
//            val u64 @8 | size u32 @16 | memory u8 @20 (1 memory BAR, 0 I/O BAR) | 3 bytes padding
//   SYNC_SYSMEM payload (192 bytes): gpas u64[8] @0 | sizes u64[8] @64 | offsets u64[8] @128, one
//            entry per fd sent with the message (the number of regions is the number of fds)
//   SET_IRQFD, DEVICE_RESET: no payload (SET_IRQFD carries two fds: INTx eventfd, resample eventfd)
//   RET payload: u64 (a read's value, 0 or all-ones for writes); none for DEVICE_RESET
//
// The remote answers every config and BAR access and DEVICE_RESET with one RET; SYNC_SYSMEM and
// SET_IRQFD get no answer. It rejects (and then exits) a message with 8 or more fds.

import { ProtocolError } from '../../../proto/errors';

export const MPQEMU_CMD_SYNC_SYSMEM = 0;
export const MPQEMU_CMD_RET = 1;
export const MPQEMU_CMD_PCI_CFGWRITE = 2;
export const MPQEMU_CMD_PCI_CFGREAD = 3;
export const MPQEMU_CMD_BAR_WRITE = 4;
export const MPQEMU_CMD_BAR_READ = 5;
export const MPQEMU_CMD_SET_IRQFD = 6;
export const MPQEMU_CMD_DEVICE_RESET = 7;

export const MPQEMU_HDR_SIZE = 16;
export const PCI_CONF_MSG_SIZE = 12;
export const BAR_ACCESS_MSG_SIZE = 24;
/** Slots in the SYNC_SYSMEM table. */
export const SYNC_SYSMEM_SLOTS = 8;
export const SYNC_SYSMEM_MSG_SIZE = SYNC_SYSMEM_SLOTS * 8 * 3;
/** The remote takes at most 7 fds per message: 8 already fails its check (num_fds >= REMOTE_MAX_FDS). */
export const MPQEMU_MAX_FDS = 7;
/** Largest payload the remote accepts (the union of the payloads: the SYNC_SYSMEM table). */
export const MPQEMU_MAX_PAYLOAD = SYNC_SYSMEM_MSG_SIZE;
/** Config space offsets the remote accepts: PCI Express extended config space (4 KiB). */
export const PCI_CONFIG_SPACE_SIZE = 0x1000;

const NAMES = ['SYNC_SYSMEM', 'RET', 'PCI_CFGWRITE', 'PCI_CFGREAD', 'BAR_WRITE', 'BAR_READ', 'SET_IRQFD', 'DEVICE_RESET'];

/** A command's name for log lines ("BAR_READ"), or its number. */
export function mpqemuCmdName(cmd: number): string {
  return NAMES[cmd] ?? `command ${cmd}`;
}

/** Write a header at `off`: cmd, zero padding, payload size. */
export function encodeHeader(view: DataView, off: number, cmd: number, size: number): void {
  view.setInt32(off, cmd, true);
  view.setUint32(off + 4, 0, true);
  view.setBigUint64(off + 8, BigInt(size), true);
}

export interface MpqemuHeader {
  cmd: number;
  /** Payload bytes that follow; a bigint so a hostile size cannot lose bits. */
  size: bigint;
}

/** Read a header at `off`. */
export function decodeHeader(view: DataView, off = 0): MpqemuHeader {
  return { cmd: view.getInt32(off, true), size: view.getBigUint64(off + 8, true) };
}

/** A whole PCI_CFGREAD / PCI_CFGWRITE message: header + 12-byte payload. */
export function encodeConfigAccess(cmd: typeof MPQEMU_CMD_PCI_CFGREAD | typeof MPQEMU_CMD_PCI_CFGWRITE, addr: number, len: number, val = 0): Uint8Array {
  const bytes = new Uint8Array(MPQEMU_HDR_SIZE + PCI_CONF_MSG_SIZE);
  const v = new DataView(bytes.buffer);
  encodeHeader(v, 0, cmd, PCI_CONF_MSG_SIZE);
  v.setUint32(MPQEMU_HDR_SIZE + 0, addr >>> 0, true);
  v.setUint32(MPQEMU_HDR_SIZE + 4, val >>> 0, true);
  v.setInt32(MPQEMU_HDR_SIZE + 8, len, true);
  return bytes;
}

/**
 * Fill a BAR_READ / BAR_WRITE message (header + 24-byte payload) into `view` at 0, so the hot path
 * reuses one buffer. The padding bytes are written too: the buffer is not assumed to be clean.
 */
export function encodeBarAccessInto(
  view: DataView, cmd: typeof MPQEMU_CMD_BAR_READ | typeof MPQEMU_CMD_BAR_WRITE, addr: bigint, size: number, memory: boolean, val = 0n,
): void {
  encodeHeader(view, 0, cmd, BAR_ACCESS_MSG_SIZE);
  const p = MPQEMU_HDR_SIZE;
  view.setBigUint64(p + 0, BigInt.asUintN(64, addr), true);
  view.setBigUint64(p + 8, BigInt.asUintN(64, val), true);
  view.setUint32(p + 16, size, true);
  view.setUint32(p + 20, memory ? 1 : 0, true);
}

/** One row of the guest RAM table: `size` bytes at `gpa`, found at `offset` in the fd sent beside it. */
export interface SysmemRegion {
  gpa: bigint;
  size: bigint;
  offset: bigint;
}

/** A whole SYNC_SYSMEM message for these regions (send one fd per region, in the same order). */
export function encodeSyncSysmem(regions: readonly SysmemRegion[]): Uint8Array {
  if (regions.length === 0 || regions.length > MPQEMU_MAX_FDS) {
    throw new RangeError(`SYNC_SYSMEM carries 1 to ${MPQEMU_MAX_FDS} regions, not ${regions.length}`);
  }
  const bytes = new Uint8Array(MPQEMU_HDR_SIZE + SYNC_SYSMEM_MSG_SIZE);
  const v = new DataView(bytes.buffer);
  encodeHeader(v, 0, MPQEMU_CMD_SYNC_SYSMEM, SYNC_SYSMEM_MSG_SIZE);
  regions.forEach((r, i) => {
    v.setBigUint64(MPQEMU_HDR_SIZE + 8 * i, r.gpa, true);
    v.setBigUint64(MPQEMU_HDR_SIZE + 64 + 8 * i, r.size, true);
    v.setBigUint64(MPQEMU_HDR_SIZE + 128 + 8 * i, r.offset, true);
  });
  return bytes;
}

/** A message that is only a header: SET_IRQFD (with its two fds) or DEVICE_RESET. */
export function encodeBare(cmd: typeof MPQEMU_CMD_SET_IRQFD | typeof MPQEMU_CMD_DEVICE_RESET): Uint8Array {
  const bytes = new Uint8Array(MPQEMU_HDR_SIZE);
  encodeHeader(new DataView(bytes.buffer), 0, cmd, 0);
  return bytes;
}

/**
 * Check a reply header against what the request expects: a RET with `payload` bytes. Anything else
 * means the two ends no longer agree on the byte stream, and nothing after it can be trusted.
 */
export function checkRet(h: MpqemuHeader, payload: number, request: number): void {
  if (h.cmd !== MPQEMU_CMD_RET) {
    throw new ProtocolError(`the remote answered ${mpqemuCmdName(request)} with ${mpqemuCmdName(h.cmd)}, not RET`);
  }
  if (h.size !== BigInt(payload)) {
    throw new ProtocolError(`the remote answered ${mpqemuCmdName(request)} with a ${h.size}-byte RET, not ${payload} bytes`);
  }
}
