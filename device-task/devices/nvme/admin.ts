// Admin commands: queue creation and deletion with every invalid-field and invalid-queue status, Identify,
// Get / Set Features, Get Log Page, Abort, Asynchronous Event Request and Doorbell Buffer Config.
// Each handler returns the completion status (DNR included) and sets the controller's dw0 / dw1.

import type { Command, NvmeController } from './controller';
import { ADMIN, CNS, CQE_SHIFT, CQE_SIZE, DNR, LID, NSID_BROADCAST, SC, SQE_SHIFT, SQE_SIZE } from './defs';
import {
  activeNamespaceList, errorLog, firmwareSlotLog, identifyController, identifyNamespace, namespaceDescriptors, smartLog,
} from './identify';
import { CompletionQueue, SubmissionQueue } from './queues';

const INVALID_FIELD = SC.INVALID_FIELD | DNR;

export function executeAdmin(c: NvmeController, cmd: Command): number {
  // PRPs only (no SGLs) and no fused operations on the admin queue.
  if (cmd.fuse !== 0 || cmd.psdt !== 0) return INVALID_FIELD;
  switch (cmd.opcode) {
    case ADMIN.CREATE_CQ: return createCq(c, cmd);
    case ADMIN.CREATE_SQ: return createSq(c, cmd);
    case ADMIN.DELETE_SQ: return deleteSq(c, cmd);
    case ADMIN.DELETE_CQ: return deleteCq(c, cmd);
    case ADMIN.IDENTIFY: return identify(c, cmd);
    case ADMIN.GET_FEATURES: {
      const cdw10 = cmd.cdw(10);
      const r = c.features.get(cdw10 & 0xff, (cdw10 >> 8) & 0x7, cmd.cdw(11));
      c.dw0 = r.dw0;
      return r.status;
    }
    case ADMIN.SET_FEATURES: {
      const cdw10 = cmd.cdw(10);
      const r = c.features.set(cdw10 & 0xff, (cdw10 >>> 31) === 1, cmd.cdw(11), c.ioQueuesExist());
      c.dw0 = r.dw0;
      return r.status;
    }
    case ADMIN.GET_LOG_PAGE: return getLogPage(c, cmd);
    case ADMIN.ABORT:
      // Commands run to completion once fetched, so nothing is ever abortable (held AERs are not
      // aborted either): DW0 bit 0 set means "not aborted".
      c.dw0 = 1;
      return SC.SUCCESS;
    case ADMIN.ASYNC_EVENT_REQUEST: return c.holdAer(cmd.cid);
    case ADMIN.DOORBELL_BUFFER_CONFIG:
      if (!c.config.shadowDoorbells) return SC.INVALID_OPCODE | DNR;
      return doorbellBufferConfig(c, cmd);
    default:
      return SC.INVALID_OPCODE | DNR;
  }
}

/** A queue's base must be page aligned and all of it in guest RAM. */
function queueMemory(c: NvmeController, base: bigint, bytes: number): Uint8Array | number {
  if (base & BigInt(c.pageSize - 1)) return SC.INVALID_PRP_OFFSET | DNR;
  return c.memory.view(base, bytes) ?? SC.DATA_TRANSFER_ERROR | DNR;
}

function createCq(c: NvmeController, cmd: Command): number {
  const cdw10 = cmd.cdw(10);
  const cdw11 = cmd.cdw(11);
  const qid = cdw10 & 0xffff;
  const entries = (cdw10 >>> 16) + 1;
  const contiguous = (cdw11 & 1) === 1;
  const ien = (cdw11 & 2) === 2;
  const vector = cdw11 >>> 16;
  if (qid === 0 || qid > c.features.cqAllocated + 1 || c.cqs[qid]) return SC.INVALID_QID | DNR;
  if (entries < 2 || entries > c.config.queueEntries) return SC.INVALID_QSIZE | DNR;
  // CAP.CQR: only physically contiguous queues.
  if (!contiguous) return INVALID_FIELD;
  if (c.ioEntrySizes.cq !== CQE_SHIFT) return INVALID_FIELD;
  // IV must name a vector the controller has whether or not IEN is set (NVMe 1.4 §5.3, CDW11.IV);
  // with pin-based interrupts only vector 0 exists, and vector 0 (the admin CQ's) always does.
  if (vector >= Math.max(c.vectors, 1)) return SC.INVALID_VECTOR | DNR;
  const mem = queueMemory(c, cmd.prp1, entries * CQE_SIZE);
  if (typeof mem === 'number') return mem;
  c.addCq(new CompletionQueue(qid, cmd.prp1, entries, ien, vector, mem));
  return SC.SUCCESS;
}

function createSq(c: NvmeController, cmd: Command): number {
  const cdw10 = cmd.cdw(10);
  const cdw11 = cmd.cdw(11);
  const qid = cdw10 & 0xffff;
  const entries = (cdw10 >>> 16) + 1;
  const contiguous = (cdw11 & 1) === 1;
  const prio = (cdw11 >> 1) & 0x3;
  const cqid = cdw11 >>> 16;
  if (cqid === 0 || !c.cqs[cqid]) return SC.CQ_INVALID | DNR;
  if (qid === 0 || qid > c.features.sqAllocated + 1 || c.sqs[qid]) return SC.INVALID_QID | DNR;
  if (entries < 2 || entries > c.config.queueEntries) return SC.INVALID_QSIZE | DNR;
  if (!contiguous) return INVALID_FIELD;
  if (c.ioEntrySizes.sq !== SQE_SHIFT) return INVALID_FIELD;
  const mem = queueMemory(c, cmd.prp1, entries * SQE_SIZE);
  if (typeof mem === 'number') return mem;
  c.addSq(new SubmissionQueue(qid, cmd.prp1, entries, cqid, prio, mem));
  return SC.SUCCESS;
}

function deleteSq(c: NvmeController, cmd: Command): number {
  const qid = cmd.cdw(10) & 0xffff;
  const sq = qid === 0 ? undefined : c.sqs[qid];
  if (!sq) return SC.INVALID_QID | DNR;
  c.deleteSq(sq);
  return SC.SUCCESS;
}

function deleteCq(c: NvmeController, cmd: Command): number {
  const qid = cmd.cdw(10) & 0xffff;
  const cq = qid === 0 ? undefined : c.cqs[qid];
  if (!cq) return SC.INVALID_QID | DNR;
  // No DNR: the same command succeeds once the host has deleted those SQs (DNR means a retry is
  // expected to fail).
  if (cq.sqs.size > 0) return SC.INVALID_QUEUE_DELETION;
  c.deleteCq(cq);
  return SC.SUCCESS;
}

function identify(c: NvmeController, cmd: Command): number {
  const cns = cmd.cdw(10) & 0xff;
  const nsid = cmd.nsid;
  const nn = c.namespaces.length;
  const serial = c.config.serial;
  switch (cns) {
    case CNS.CONTROLLER:
      return c.toHost(cmd, identifyController({
        serial, mdts: c.config.mdts, namespaces: nn, volatileWriteCache: c.config.volatileWriteCache,
        shadowDoorbells: c.config.shadowDoorbells,
      }));
    case CNS.NAMESPACE:
    case CNS.NS_DESCRIPTORS: {
      // Every NSID 1..NN is active here, so no valid NSID is inactive.
      const ns = nsid >= 1 && nsid <= nn ? c.namespaces[nsid - 1] : undefined;
      if (!ns) return SC.INVALID_NAMESPACE | DNR;
      return c.toHost(cmd, cns === CNS.NAMESPACE ? identifyNamespace(ns, serial) : namespaceDescriptors(serial, nsid));
    }
    case CNS.ACTIVE_NS_LIST:
      if (nsid >= 0xffff_fffe) return SC.INVALID_NAMESPACE | DNR;
      return c.toHost(cmd, activeNamespaceList(c.namespaces.map((n) => n.nsid), nsid));
    default:
      return INVALID_FIELD;
  }
}

function getLogPage(c: NvmeController, cmd: Command): number {
  const cdw10 = cmd.cdw(10);
  const lid = cdw10 & 0xff;
  const retainEvent = (cdw10 >> 15) & 1;
  const dwords = ((cmd.cdw(11) & 0xffff) * 0x10000 + (cdw10 >>> 16)) + 1;
  const len = dwords * 4;
  const offset = Number((BigInt(cmd.cdw(13)) << 32n) | BigInt(cmd.cdw(12)));
  let page: Uint8Array;
  switch (lid) {
    case LID.ERROR_INFO:
      page = errorLog(c.errorLog);
      break;
    case LID.SMART:
      // Controller-wide only (LPA bit 0 clear): the NSID must be 0 or the broadcast value.
      if (cmd.nsid !== 0 && cmd.nsid !== NSID_BROADCAST) return INVALID_FIELD;
      page = smartLog(c.smart, Date.now());
      break;
    case LID.FIRMWARE_SLOT:
      page = firmwareSlotLog();
      break;
    default:
      return SC.INVALID_LOG_PAGE | DNR;
  }
  // The offset must select a byte of the log: at or past its end there is nothing to return.
  if (offset % 4 !== 0 || offset >= page.length || len > c.maxTransfer) return INVALID_FIELD;
  const status = c.toHost(cmd, page.subarray(offset), len);
  if (status === SC.SUCCESS && !retainEvent) c.logPageRead(lid);
  return status;
}

function doorbellBufferConfig(c: NvmeController, cmd: Command): number {
  const mask = BigInt(c.pageSize - 1);
  const dbs = cmd.prp1;
  const eis = cmd.prp2;
  if (dbs & mask || eis & mask || dbs === 0n || eis === 0n) return INVALID_FIELD;
  const db = c.memory.view(dbs, c.pageSize);
  const ei = c.memory.view(eis, c.pageSize);
  if (!db || !ei) return SC.DATA_TRANSFER_ERROR | DNR;
  c.configureShadow(new Uint32Array(db.buffer, db.byteOffset, c.pageSize / 4), new Uint32Array(ei.buffer, ei.byteOffset, c.pageSize / 4));
  return SC.SUCCESS;
}
