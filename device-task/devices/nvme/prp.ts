// PRP walking: turn a command's PRP1/PRP2 and a transfer length into the guest memory it names.
//
// Rules (NVMe 1.4 §4.3, for a memory page size P = 2^(12 + CC.MPS)):
// * PRP1 may start anywhere in its page (dword aligned); its chunk runs to the end of that page.
// * If the rest fits in one page, PRP2 is that page (page aligned).
// * Otherwise PRP2 points to a PRP list (qword aligned, possibly mid-page): one entry per page, each
//   page aligned. A list runs to the end of its page; when more entries are needed than fit, the last
//   slot of the page holds the (page aligned) address of the next list page.
// Misaligned entries are Invalid PRP Offset; a list or a data page outside guest RAM is a Data
// Transfer Error. Nothing is read or written here except the list entries themselves.

import type { GuestMemoryDma } from '../../sdk/guest-memory';
import { SC } from './defs';

/** One contiguous piece of a transfer, already checked to lie in guest RAM. */
export interface DmaSegment {
  gpa: bigint;
  /** A live view of the guest memory. */
  bytes: Uint8Array;
}

/** Status 0 and the segments, or the status that fails the command (and no segments). */
export interface PrpResult {
  status: number;
  segments: DmaSegment[];
}

const fail = (status: number): PrpResult => ({ status, segments: [] });

/**
 * Walk PRP1/PRP2 for `len` bytes with memory page size `pageSize`. Returns the segments (adjacent
 * pages merged) or the status that fails the command.
 */
export function walkPrps(mem: GuestMemoryDma, prp1: bigint, prp2: bigint, len: number, pageSize: number): PrpResult {
  if (len === 0) return { status: 0, segments: [] };
  const page = BigInt(pageSize);
  const pageMask = page - 1n;
  if (prp1 & 3n) return fail(SC.INVALID_PRP_OFFSET);
  const segments: DmaSegment[] = [];
  const add = (gpa: bigint, n: number): boolean => {
    const last = segments[segments.length - 1];
    if (last && last.gpa + BigInt(last.bytes.length) === gpa) {
      const v = mem.view(last.gpa, last.bytes.length + n);
      if (v) {
        last.bytes = v;
        return true;
      }
    }
    const v = mem.view(gpa, n);
    if (!v) return false;
    segments.push({ gpa, bytes: v });
    return true;
  };

  const first = Math.min(len, Number(page - (prp1 & pageMask)));
  if (!add(prp1, first)) return fail(SC.DATA_TRANSFER_ERROR);
  let remaining = len - first;
  if (remaining === 0) return { status: 0, segments };
  if (remaining <= pageSize) {
    if (prp2 & pageMask) return fail(SC.INVALID_PRP_OFFSET);
    return add(prp2, remaining) ? { status: 0, segments } : fail(SC.DATA_TRANSFER_ERROR);
  }

  // A PRP list: qword aligned, possibly starting mid-page.
  if (prp2 & 7n) return fail(SC.INVALID_PRP_OFFSET);
  let list = prp2;
  for (;;) {
    const slots = Number((page - (list & pageMask)) >> 3n);
    const needed = Math.ceil(remaining / pageSize);
    const entries = mem.view(list, 8 * Math.min(slots, needed));
    if (!entries) return fail(SC.DATA_TRANSFER_ERROR);
    const view = new DataView(entries.buffer, entries.byteOffset, entries.length);
    // Every slot but the last of a page is data; the last is data only if it is the final entry.
    const dataSlots = needed <= slots ? needed : slots - 1;
    for (let i = 0; i < dataSlots; i++) {
      const entry = view.getBigUint64(8 * i, true);
      if (entry & pageMask) return fail(SC.INVALID_PRP_OFFSET);
      const n = Math.min(remaining, pageSize);
      if (!add(entry, n)) return fail(SC.DATA_TRANSFER_ERROR);
      remaining -= n;
    }
    if (remaining === 0) return { status: 0, segments };
    const next = view.getBigUint64(8 * (slots - 1), true);
    if (next & pageMask) return fail(SC.INVALID_PRP_OFFSET);
    list = next;
  }
}
