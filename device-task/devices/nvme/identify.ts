// The data structures the controller hands out: Identify Controller / Namespace / Active Namespace
// list / Namespace Identification Descriptors, and the log pages (Error Information, SMART / Health,
// Firmware Slot). Each is built as the bytes the host receives.

import { createHash } from 'crypto';
import type { BackingStore } from './backing-store';
import { NVME_VERSION } from './defs';

export const IDENTIFY_SIZE = 4096;
export const MODEL_NUMBER = 'ioregionfd-emu NVMe';
export const FIRMWARE_REVISION = '0.1.0';
/** Abort Command Limit and Asynchronous Event Request Limit (0's based), and error log entries - 1. */
export const ACL = 3;
export const AERL = 3;
export const ELPE = 15;
/** Temperatures are fixed: there is no sensor (Kelvin). */
export const COMPOSITE_TEMPERATURE = 295;
export const WARNING_TEMPERATURE = 343;
export const CRITICAL_TEMPERATURE = 373;

export interface Namespace {
  nsid: number;
  store: BackingStore;
  lbaShift: number;
  /** Size in logical blocks. */
  blocks: number;
}

export interface ControllerIdentity {
  serial: string;
  mdts: number;
  namespaces: number;
  volatileWriteCache: boolean;
  shadowDoorbells: boolean;
}

function ascii(out: Uint8Array, off: number, len: number, text: string): void {
  out.fill(0x20, off, off + len);
  for (let i = 0; i < Math.min(len, text.length); i++) out[off + i] = text.charCodeAt(i) & 0x7f;
}

/** Identify Controller (CNS 01h). */
export function identifyController(c: ControllerIdentity): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  const v = new DataView(b.buffer);
  // VID/SSVID 0: this controller has no PCI function and no vendor.
  ascii(b, 0x004, 20, c.serial);
  ascii(b, 0x018, 40, MODEL_NUMBER);
  ascii(b, 0x040, 8, FIRMWARE_REVISION);
  b[0x04d] = c.mdts;
  v.setUint32(0x050, NVME_VERSION, true);
  b[0x06f] = 1; // CNTRLTYPE: I/O controller
  v.setUint16(0x100, c.shadowDoorbells ? 1 << 8 : 0, true); // OACS: Doorbell Buffer Config
  b[0x102] = ACL;
  b[0x103] = AERL;
  b[0x104] = (1 << 1) | 1; // FRMW: one slot, slot 1 read-only
  b[0x105] = 1 << 2; // LPA: extended Get Log Page data (NUMDU, offsets)
  b[0x106] = ELPE;
  b[0x107] = 0; // NPSS: one power state
  v.setUint16(0x10a, WARNING_TEMPERATURE, true);
  v.setUint16(0x10c, CRITICAL_TEMPERATURE, true);
  b[0x200] = 0x66; // SQES: 64 bytes
  b[0x201] = 0x44; // CQES: 16 bytes
  v.setUint32(0x204, c.namespaces, true);
  v.setUint16(0x208, (1 << 2) | (1 << 3) | (1 << 4), true); // ONCS: DSM, Write Zeroes, Save/Select in features
  // VWC: present (bit 0); Flush with the broadcast NSID supported (bits 2:1 = 11b).
  b[0x20d] = (c.volatileWriteCache ? 1 : 0) | (3 << 1);
  const nqn = `nqn.2024-01.io.github.ioregionfd-emu:nvme:${c.serial}`;
  for (let i = 0; i < nqn.length && i < 255; i++) b[0x300 + i] = nqn.charCodeAt(i);
  v.setUint16(0x800, 2500, true); // PSD0: 25.00 W
  return b;
}

/** A namespace's stable identifiers (NGUID, EUI-64, UUID), derived from the serial and the NSID. */
export function namespaceIds(serial: string, nsid: number): { nguid: Uint8Array; eui64: Uint8Array; uuid: Uint8Array } {
  const h = createHash('sha256').update(`${serial}/${nsid}`).digest();
  const uuid = Uint8Array.from(h.subarray(16, 32));
  uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4 (random-looking)
  uuid[8] = (uuid[8] & 0x3f) | 0x80; // RFC 4122 variant
  return { nguid: Uint8Array.from(h.subarray(0, 16)), eui64: Uint8Array.from(h.subarray(0, 8)), uuid };
}

/** Identify Namespace (CNS 00h) for an active namespace; an inactive one is all zeroes. */
export function identifyNamespace(ns: Namespace, serial: string): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  const v = new DataView(b.buffer);
  const blocks = BigInt(ns.blocks);
  v.setBigUint64(0x00, blocks, true); // NSZE
  v.setBigUint64(0x08, blocks, true); // NCAP
  v.setBigUint64(0x10, blocks, true); // NUSE (not tracked: thin provisioning is not reported)
  b[0x19] = 0; // NLBAF: one format
  b[0x1a] = 0; // FLBAS: format 0, no metadata
  // DLFEAT: deallocated blocks read as zeroes; Write Zeroes may deallocate.
  b[0x21] = 0x01 | (1 << 3);
  const ids = namespaceIds(serial, ns.nsid);
  b.set(ids.nguid, 0x68);
  b.set(ids.eui64, 0x78);
  b[0x80 + 2] = ns.lbaShift; // LBAF0: LBADS, no metadata, best relative performance
  return b;
}

/** Active Namespace ID list (CNS 02h): the active NSIDs above `after`, ascending, zero padded. */
export function activeNamespaceList(nsids: number[], after: number): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  const v = new DataView(b.buffer);
  let i = 0;
  for (const id of nsids) {
    if (id > after && i < IDENTIFY_SIZE / 4) v.setUint32(4 * i++, id, true);
  }
  return b;
}

/** Namespace Identification Descriptor list (CNS 03h): EUI-64, NGUID, UUID. */
export function namespaceDescriptors(serial: string, nsid: number): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  const ids = namespaceIds(serial, nsid);
  let off = 0;
  for (const [type, id] of [[1, ids.eui64], [2, ids.nguid], [3, ids.uuid]] as const) {
    b[off] = type;
    b[off + 1] = id.length;
    b.set(id, off + 4);
    off += 4 + id.length;
  }
  return b;
}

// ---- log pages ---------------------------------------------------------------------------------------

export const ERROR_ENTRY_SIZE = 64;

export interface ErrorEntry {
  count: bigint;
  sqid: number;
  cid: number;
  status: number;
  /** Byte (7:0) and bit (10:8) of the command field in error; 0xffff when it does not apply. */
  location: number;
  lba: bigint;
  nsid: number;
}

/** Error Information log: the newest entry first, ELPE + 1 entries, unused ones zero. */
export function errorLog(entries: ErrorEntry[]): Uint8Array {
  const b = new Uint8Array(ERROR_ENTRY_SIZE * (ELPE + 1));
  const v = new DataView(b.buffer);
  entries.slice(0, ELPE + 1).forEach((e, i) => {
    const o = i * ERROR_ENTRY_SIZE;
    v.setBigUint64(o, e.count, true);
    v.setUint16(o + 8, e.sqid, true);
    v.setUint16(o + 10, e.cid, true);
    v.setUint16(o + 12, (e.status << 1) & 0xffff, true); // the status field as in DW3 (phase bit 0)
    v.setUint16(o + 14, e.location, true);
    v.setBigUint64(o + 16, e.lba, true);
    v.setUint32(o + 24, e.nsid, true);
    b[o + 29] = 1; // transport type: PCIe
  });
  return b;
}

/** Counters behind the SMART log, kept as numbers on the I/O path (exact up to 2^53). */
export interface SmartCounters {
  bytesRead: number;
  bytesWritten: number;
  readCommands: number;
  writeCommands: number;
  busyMs: number;
  mediaErrors: number;
  errorCount: bigint;
  poweredOnAt: number;
}

function u128(v: DataView, off: number, value: bigint): void {
  v.setBigUint64(off, BigInt.asUintN(64, value), true);
  v.setBigUint64(off + 8, value >> 64n, true);
}

/** SMART / Health Information (controller-wide), 512 bytes. */
export function smartLog(s: SmartCounters, now: number): Uint8Array {
  const b = new Uint8Array(512);
  const v = new DataView(b.buffer);
  b[0] = 0; // critical warnings: none
  v.setUint16(1, COMPOSITE_TEMPERATURE, true);
  b[3] = 100; // available spare %
  b[4] = 10; // available spare threshold %
  b[5] = 0; // percentage used
  // Data units are thousands of 512-byte units, rounded up.
  const units = (bytes: number) => BigInt(Math.ceil(bytes / 512_000));
  u128(v, 32, units(s.bytesRead));
  u128(v, 48, units(s.bytesWritten));
  u128(v, 64, BigInt(s.readCommands));
  u128(v, 80, BigInt(s.writeCommands));
  u128(v, 96, BigInt(Math.floor(s.busyMs / 60_000))); // controller busy time, minutes
  u128(v, 112, 1n); // power cycles: this run
  u128(v, 128, BigInt(Math.floor(Math.max(0, now - s.poweredOnAt) / 3_600_000))); // power-on hours
  u128(v, 144, 0n); // unsafe shutdowns: not remembered across runs
  u128(v, 160, BigInt(s.mediaErrors));
  u128(v, 176, s.errorCount);
  return b;
}

/** Firmware Slot Information: slot 1 active, holding FIRMWARE_REVISION. */
export function firmwareSlotLog(): Uint8Array {
  const b = new Uint8Array(512);
  b[0] = 1; // AFI: slot 1 active
  ascii(b, 8, 8, FIRMWARE_REVISION);
  return b;
}

/** A namespace over a store: as many whole blocks as fit. */
export function makeNamespace(nsid: number, store: BackingStore, lbaSize: number): Namespace {
  const lbaShift = Math.log2(lbaSize);
  return { nsid, store, lbaShift, blocks: Math.floor(store.size / lbaSize) };
}
