// Encodes and decodes the 32-byte ioregionfd_cmd / ioregionfd_resp messages (docs/ioregionfd.md §4) in the v1/v2 "info word"
// and the v3 "bitfield bytes" layouts.
//
// Every multi-byte field is host byte order; we model an x86 host, so all DataView accesses are
// little-endian. Offsets inside a message (docs/ioregionfd.md §4.2, §4.3, §4.4):
//   cmd:  0 header (layout-specific, 8 bytes) | 8 user_data u64 | 16 offset u64 | 24 data u64
//   resp: 0 data u64 | 8 pad[24]

import { ProtocolError } from './errors';

/** Size of both `struct ioregionfd_cmd` and `struct ioregionfd_resp`, in every RFC version. */
export const IOREGIONFD_MSG_SIZE = 32;

/** `cmd` value of a guest load. */
export const IOREGIONFD_CMD_READ = 0;
/** `cmd` value of a guest store (also the v3 FAST_MMIO doorbell). */
export const IOREGIONFD_CMD_WRITE = 1;

/** v1/v2 size codes in info bits 5..4 (bytes = 1 << code). */
export const IOREGIONFD_SIZE_8BIT = 0;
export const IOREGIONFD_SIZE_16BIT = 1;
export const IOREGIONFD_SIZE_32BIT = 2;
export const IOREGIONFD_SIZE_64BIT = 3;
/** v1/v2 bit position of the size code inside the info word. */
export const IOREGIONFD_SIZE_OFFSET = 4;
/** v1/v2 bit position of the resp flag inside the info word. */
export const IOREGIONFD_RESP_OFFSET = 6;

/** 'v3' = RFC v3 layout (cmd byte + size_exponent/resp bitfields in byte 1); 'v1' = the v1/v2 "info word" layout. */
export type WireLayout = 'v3' | 'v1';

/** A decoded `struct ioregionfd_cmd`, independent of layout. */
export interface IoregionfdCmd {
  /** IOREGIONFD_CMD_READ or IOREGIONFD_CMD_WRITE. */
  cmd: number;
  /** Access size in bytes: 1, 2, 4, 8; 0 only when encoding the v3 FAST_MMIO doorbell. */
  size: number;
  /** True when the sender will read a 32-byte response. */
  resp: boolean;
  /** The region's user_data, echoed unchanged. */
  userData: bigint;
  /** Guest address minus the region's guest_paddr. */
  offset: bigint;
  /** Write payload zero-extended to 64 bits; 0 for reads. */
  data: bigint;
}

const USER_DATA_AT = 8;
const OFFSET_AT = 16;
const DATA_AT = 24;

// v1/v2 info word: cmd is a 4-bit field (Stefan reserved room for future commands), size code is 2 bits.
const V1_CMD_MASK = 0xf;
const V1_SIZE_CODE_MASK = 0x3;
const V1_RESP_BIT = 1 << IOREGIONFD_RESP_OFFSET;

// v3 byte 1: SysV x86-64 allocates bit-fields from the least significant bit, so size_exponent:4
// takes bits 3..0 and resp:1 takes bit 4 (docs/ioregionfd.md §4.2; the RFC never states the positions).
const V3_SIZE_EXPONENT_MASK = 0xf;
const V3_RESP_BIT = 0x10;

const U64_MAX = 0xffff_ffff_ffff_ffffn;

/**
 * The size code for an access of `size` bytes: 1→0, 2→1, 4→2, 8→3. The v1/v2 size code and the
 * v3 size_exponent share these values. Size 0 (v3 FAST_MMIO, "does not specify a length") maps
 * to 0 as the kernel leaves the field zero. Throws RangeError for any other size.
 */
export function sizeToCode(size: number): number {
  switch (size) {
    case 0:
    case 1:
      return 0;
    case 2:
      return 1;
    case 4:
      return 2;
    case 8:
      return 3;
    default:
      throw new RangeError(`ioregionfd access size must be 1, 2, 4 or 8 bytes (0 for FAST_MMIO), got ${size}`);
  }
}

/**
 * The access size in bytes for a size code / size_exponent read off the wire: 0..3 → 1, 2, 4, 8.
 * Code 0 always means 1 byte: a FAST_MMIO doorbell cannot be told apart (docs/ioregionfd.md §4.7). Throws
 * ProtocolError (EPROTO) for larger codes, since only a misbehaving peer sends them.
 */
export function codeToSize(code: number): number {
  if (code >= 0 && code <= 3 && Number.isInteger(code)) return 1 << code;
  throw new ProtocolError(`ioregionfd_cmd has invalid size code ${code}`);
}

/**
 * The value a read of `size` bytes completes with: the low `size` bytes of resp.data
 * (host/little-endian). Also used to zero-extend write payloads; size 0 yields 0n.
 * Throws RangeError for a size other than 0, 1, 2, 4, 8.
 */
/** All-ones in the low `bytes` bytes (any byte count; 8 and more give the full 64 bits). */
export function sizeMask(bytes: number): bigint {
  return bytes >= 8 ? U64_MAX : (1n << BigInt(8 * bytes)) - 1n;
}

export function truncateToSize(data: bigint, size: number): bigint {
  switch (size) {
    case 0:
      return 0n;
    case 1:
      return data & 0xffn;
    case 2:
      return data & 0xffffn;
    case 4:
      return data & 0xffff_ffffn;
    case 8:
      return data & U64_MAX;
    default:
      throw new RangeError(`ioregionfd access size must be 1, 2, 4 or 8 bytes (0 for FAST_MMIO), got ${size}`);
  }
}

// DataView.setBigUint64 silently wraps out-of-range values modulo 2^64; an offset that went
// negative in the caller would then reach the device as a huge, plausible-looking number.
function checkU64(field: string, value: bigint): void {
  if (value < 0n || value > U64_MAX) throw new RangeError(`ioregionfd ${field} ${value} does not fit in a u64`);
}

// Checked before the first store so a bad offset never leaves a half-written message behind.
function checkEncodeRoom(view: DataView, off: number): void {
  if (!Number.isInteger(off) || off < 0 || off + IOREGIONFD_MSG_SIZE > view.byteLength) {
    throw new RangeError(`ioregionfd message at offset ${off} does not fit in a ${view.byteLength}-byte view`);
  }
}

function checkDecodeRoom(what: string, view: DataView, off: number): void {
  if (!Number.isInteger(off) || off < 0 || off + IOREGIONFD_MSG_SIZE > view.byteLength) {
    throw new ProtocolError(`short ${what}: need ${IOREGIONFD_MSG_SIZE} bytes at offset ${off} of a ${view.byteLength}-byte view`);
  }
}

/**
 * Allocation-free form of encodeCmd for the kernel-model's per-access path: writes one command
 * into view[off..off+32), zeroing all padding. `size` is in bytes (0 only for v3 FAST_MMIO);
 * `data` is masked to `size` bytes. `cmd` may be any value its field holds (4 bits in v1, 8 in v3)
 * so tests can inject unknown commands. Throws RangeError on a bad size, cmd, u64 or offset.
 */
export function encodeCmdFields(
  layout: WireLayout,
  view: DataView,
  off: number,
  cmd: number,
  size: number,
  resp: boolean,
  userData: bigint,
  offset: bigint,
  data: bigint,
): void {
  checkEncodeRoom(view, off);
  checkU64('user_data', userData);
  checkU64('offset', offset);
  const code = sizeToCode(size);
  if (layout === 'v3') {
    if (!Number.isInteger(cmd) || cmd < 0 || cmd > 0xff) throw new RangeError(`v3 cmd ${cmd} does not fit in a u8`);
    view.setUint8(off, cmd);
    view.setUint8(off + 1, code | (resp ? V3_RESP_BIT : 0));
    view.setUint16(off + 2, 0, true);
    view.setUint32(off + 4, 0, true);
  } else if (layout === 'v1') {
    // v1/v2 predates FAST_MMIO: size code 0 would claim a 1-byte access.
    if (size === 0) throw new RangeError('the v1/v2 layout has no size-0 (FAST_MMIO) encoding');
    if (!Number.isInteger(cmd) || cmd < 0 || cmd > V1_CMD_MASK) throw new RangeError(`v1 cmd ${cmd} does not fit in 4 bits`);
    view.setUint32(off, cmd | (code << IOREGIONFD_SIZE_OFFSET) | (resp ? V1_RESP_BIT : 0), true);
    view.setUint32(off + 4, 0, true);
  } else {
    throw new RangeError(`unknown ioregionfd wire layout ${String(layout)}`);
  }
  view.setBigUint64(off + USER_DATA_AT, userData, true);
  view.setBigUint64(off + OFFSET_AT, offset, true);
  // Only the low `size` bytes are guest data; KVM zeroes the rest of the field (docs/ioregionfd.md §4.5).
  view.setBigUint64(off + DATA_AT, truncateToSize(data, size), true);
}

/** Encode a command into buf[off..off+32) (all padding zeroed). `size` in bytes; data is the guest value zero-extended. */
export function encodeCmd(layout: WireLayout, c: IoregionfdCmd, view: DataView, off = 0): void {
  encodeCmdFields(layout, view, off, c.cmd, c.size, c.resp, c.userData, c.offset, c.data);
}

/**
 * Decode a command into an existing object (no allocation besides the bigints), for device tasks
 * that decode one command per frame. Same checks as decodeCmd; returns `out`.
 */
export function decodeCmdInto(layout: WireLayout, view: DataView, off: number, out: IoregionfdCmd): IoregionfdCmd {
  checkDecodeRoom('ioregionfd_cmd', view, off);
  let cmd: number;
  let size: number;
  let resp: boolean;
  if (layout === 'v3') {
    cmd = view.getUint8(off);
    const bits = view.getUint8(off + 1);
    if (cmd > IOREGIONFD_CMD_WRITE) throw new ProtocolError(`ioregionfd_cmd has unknown cmd ${cmd}`);
    size = codeToSize(bits & V3_SIZE_EXPONENT_MASK);
    resp = (bits & V3_RESP_BIT) !== 0;
  } else if (layout === 'v1') {
    const info = view.getUint32(off, true);
    cmd = info & V1_CMD_MASK;
    if (cmd > IOREGIONFD_CMD_WRITE) throw new ProtocolError(`ioregionfd_cmd has unknown cmd ${cmd}`);
    size = 1 << ((info >>> IOREGIONFD_SIZE_OFFSET) & V1_SIZE_CODE_MASK);
    resp = (info & V1_RESP_BIT) !== 0;
  } else {
    throw new RangeError(`unknown ioregionfd wire layout ${String(layout)}`);
  }
  out.cmd = cmd;
  out.size = size;
  out.resp = resp;
  out.userData = view.getBigUint64(off + USER_DATA_AT, true);
  out.offset = view.getBigUint64(off + OFFSET_AT, true);
  out.data = view.getBigUint64(off + DATA_AT, true);
  return out;
}

/**
 * Decode a command; throws ProtocolError (code 'EPROTO') for an unknown cmd (not 0/1), an invalid
 * size code or fewer than 32 bytes. Padding/reserved bits are ignored. `data` is the full u64 as
 * sent (a conforming sender already zero-extended it; use truncateToSize to be defensive).
 * A v3 size_exponent of 0 decodes as size 1 even when it was a FAST_MMIO doorbell: the two are
 * byte-identical on the wire (docs/ioregionfd.md §4.7).
 */
export function decodeCmd(layout: WireLayout, view: DataView, off = 0): IoregionfdCmd {
  return decodeCmdInto(layout, view, off, { cmd: 0, size: 0, resp: false, userData: 0n, offset: 0n, data: 0n });
}

/** Encode a response carrying `data` (a u64) into view[off..off+32); pad zeroed. Same in every layout. */
export function encodeResp(data: bigint, view: DataView, off = 0): void {
  checkEncodeRoom(view, off);
  checkU64('resp data', data);
  view.setBigUint64(off, data, true);
  view.setBigUint64(off + 8, 0n, true);
  view.setBigUint64(off + 16, 0n, true);
  view.setBigUint64(off + 24, 0n, true);
}

/** Decode a response's data u64; the 24-byte pad is ignored (KVM never looks at it). Throws ProtocolError if fewer than 32 bytes. */
export function decodeResp(view: DataView, off = 0): bigint {
  checkDecodeRoom('ioregionfd_resp', view, off);
  return view.getBigUint64(off, true);
}
