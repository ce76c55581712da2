// NVM I/O commands: Read, Write, Flush, Write Zeroes, Dataset Management (deallocate). Data moves
// between the image and guest memory directly (readv/writev into the segments the PRPs name).
//
// Checks in order: opcode, namespace, transfer size against MDTS, LBA range, PRPs; then the I/O.
// Durability: with the volatile write cache enabled (the default when one is advertised), a write is
// durable after a Flush; with it disabled, or for a Force Unit Access write, before it completes.

import type { Command, NvmeController } from './controller';
import { DNR, NSID_BROADCAST, NVM, SC } from './defs';
import type { Namespace } from './identify';
import { walkPrps } from './prp';

const DSM_RANGE_SIZE = 16;
const DSM_ATTR_DEALLOCATE = 1 << 2;
const FUA = 1 << 30;
const DEAC = 1 << 25;

export function executeIo(c: NvmeController, cmd: Command): number {
  // No fused operations and no SGLs.
  if (cmd.fuse !== 0 || cmd.psdt !== 0) return SC.INVALID_FIELD | DNR;
  const opcode = cmd.opcode;
  if (opcode === NVM.FLUSH) return flush(c, cmd.nsid);
  if (opcode !== NVM.READ && opcode !== NVM.WRITE && opcode !== NVM.WRITE_ZEROES && opcode !== NVM.DATASET_MANAGEMENT) {
    return SC.INVALID_OPCODE | DNR;
  }
  const nsid = cmd.nsid;
  const ns = nsid >= 1 && nsid <= c.namespaces.length ? c.namespaces[nsid - 1] : undefined;
  if (!ns) return SC.INVALID_NAMESPACE | DNR;
  if (opcode === NVM.DATASET_MANAGEMENT) return datasetManagement(c, cmd, ns);
  // SLBA as a number: exact below 2^53, and anything above is out of range of any namespace here.
  const slba = cmd.cdw(11) * 0x1_0000_0000 + cmd.cdw(10);
  const cdw12 = cmd.cdw(12);
  const nlb = (cdw12 & 0xffff) + 1;
  const blockBytes = 2 ** ns.lbaShift;
  const len = nlb * blockBytes;
  if (opcode !== NVM.WRITE_ZEROES && len > c.maxTransfer) return SC.INVALID_FIELD | DNR;
  if (slba + nlb > ns.blocks) {
    c.errorLba = BigInt(cmd.cdw(11)) << 32n | BigInt(cmd.cdw(10));
    return SC.LBA_OUT_OF_RANGE | DNR;
  }
  const pos = slba * blockBytes;
  const t0 = performance.now();
  let status: number;
  if (opcode === NVM.WRITE_ZEROES) {
    status = ns.store.zero(pos, len, (cdw12 & DEAC) !== 0) ? durable(c, ns, false) : SC.WRITE_FAULT;
  } else {
    const bufs = dataBuffers(c, cmd, len);
    if (typeof bufs === 'number') return bufs;
    if (opcode === NVM.READ) {
      status = ns.store.read(pos, bufs) ? SC.SUCCESS : SC.UNRECOVERED_READ_ERROR;
      c.smart.readCommands++;
      c.smart.bytesRead += len;
    } else {
      status = ns.store.write(pos, bufs) ? durable(c, ns, (cdw12 & FUA) !== 0) : SC.WRITE_FAULT;
      c.smart.writeCommands++;
      c.smart.bytesWritten += len;
    }
  }
  c.smart.busyMs += performance.now() - t0;
  if (status !== SC.SUCCESS) {
    c.smart.mediaErrors++;
    c.errorLba = BigInt(slba);
  }
  return status;
}

/** The guest memory a transfer names: one view when PRP1's page holds it all (most I/O), else the PRP walk. */
function dataBuffers(c: NvmeController, cmd: Command, len: number): Uint8Array[] | number {
  const prp1 = cmd.prp1;
  if ((prp1 & 3n) === 0n && Number(prp1 & BigInt(c.pageSize - 1)) + len <= c.pageSize) {
    const v = c.memory.view(prp1, len);
    return v ? [v] : SC.DATA_TRANSFER_ERROR | DNR;
  }
  const prps = walkPrps(c.memory, prp1, cmd.prp2, len, c.pageSize);
  if (prps.status) return prps.status | DNR;
  return prps.segments.map((s) => s.bytes);
}

/** After a write: make it durable now unless the volatile write cache may hold it until a Flush. */
function durable(c: NvmeController, ns: Namespace, fua: boolean): number {
  if (c.features.writeCacheEnabled && !fua) return SC.SUCCESS;
  return ns.store.flush() ? SC.SUCCESS : SC.WRITE_FAULT;
}

/** Flush one namespace, or all of them (NSID FFFFFFFFh; Identify VWC bits 2:1 say it is supported). */
function flush(c: NvmeController, nsid: number): number {
  let targets: Namespace[];
  if (nsid === NSID_BROADCAST) targets = c.namespaces;
  else if (nsid >= 1 && nsid <= c.namespaces.length) targets = [c.namespaces[nsid - 1]];
  else return SC.INVALID_NAMESPACE | DNR;
  // Without a volatile write cache every write was durable when it completed: nothing to do.
  if (!c.config.volatileWriteCache) return SC.SUCCESS;
  for (const ns of targets) if (!ns.store.flush()) return SC.WRITE_FAULT;
  return SC.SUCCESS;
}

/** Dataset Management: only the deallocate attribute acts (the access hints are advisory). */
function datasetManagement(c: NvmeController, cmd: Command, ns: Namespace): number {
  const ranges = (cmd.cdw(10) & 0xff) + 1;
  const data = c.fromHost(cmd, ranges * DSM_RANGE_SIZE);
  if (typeof data === 'number') return data;
  if (!(cmd.cdw(11) & DSM_ATTR_DEALLOCATE)) return SC.SUCCESS;
  const v = new DataView(data.buffer);
  // Check every range before deallocating any.
  for (let i = 0; i < ranges; i++) {
    const nlb = v.getUint32(i * DSM_RANGE_SIZE + 4, true);
    const slba = v.getBigUint64(i * DSM_RANGE_SIZE + 8, true);
    if (slba + BigInt(nlb) > BigInt(ns.blocks)) {
      c.errorLba = slba;
      return SC.LBA_OUT_OF_RANGE | DNR;
    }
  }
  for (let i = 0; i < ranges; i++) {
    const nlb = v.getUint32(i * DSM_RANGE_SIZE + 4, true);
    const slba = Number(v.getBigUint64(i * DSM_RANGE_SIZE + 8, true));
    if (nlb && !ns.store.zero(slba * 2 ** ns.lbaShift, nlb * 2 ** ns.lbaShift, true)) return SC.WRITE_FAULT;
  }
  return durable(c, ns, false);
}
