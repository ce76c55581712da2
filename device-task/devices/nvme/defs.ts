// NVMe numbers the controller model speaks: BAR0 register offsets and fields, opcodes, status codes,
// feature and log page identifiers (NVM Express Base Specification 1.4, PCIe transport).

/** Controller registers in BAR0 (bytes). */
export const REG = {
  CAP: 0x00, VS: 0x08, INTMS: 0x0c, INTMC: 0x10, CC: 0x14, CSTS: 0x1c, NSSR: 0x20, AQA: 0x24, ASQ: 0x28, ACQ: 0x30,
  CMBLOC: 0x38, CMBSZ: 0x3c,
} as const;

/** The first doorbell: SQ y tail at DOORBELL_BASE + 2y * stride, CQ y head at + (2y + 1) * stride. */
export const DOORBELL_BASE = 0x1000;

/** VS 1.4.0. */
export const NVME_VERSION = 0x0001_0400;

export const CC_EN = 1 << 0;
export const CC_CSS_SHIFT = 4;
export const CC_MPS_SHIFT = 7;
export const CC_AMS_SHIFT = 11;
export const CC_SHN_SHIFT = 14;
export const CC_IOSQES_SHIFT = 16;
export const CC_IOCQES_SHIFT = 20;

export const CSTS_RDY = 1 << 0;
export const CSTS_CFS = 1 << 1;
export const CSTS_SHST_SHIFT = 2;
export const SHST_NORMAL = 0;
export const SHST_COMPLETE = 2;

/** CC.AMS values. */
export const AMS_RR = 0;
export const AMS_WRR = 1;

/** Queue entry sizes (log2): 64-byte submissions, 16-byte completions. */
export const SQE_SHIFT = 6;
export const CQE_SHIFT = 4;
export const SQE_SIZE = 1 << SQE_SHIFT;
export const CQE_SIZE = 1 << CQE_SHIFT;

export const ADMIN = {
  DELETE_SQ: 0x00, CREATE_SQ: 0x01, GET_LOG_PAGE: 0x02, DELETE_CQ: 0x04, CREATE_CQ: 0x05, IDENTIFY: 0x06, ABORT: 0x08,
  SET_FEATURES: 0x09, GET_FEATURES: 0x0a, ASYNC_EVENT_REQUEST: 0x0c, DOORBELL_BUFFER_CONFIG: 0x7c,
} as const;

export const NVM = { FLUSH: 0x00, WRITE: 0x01, READ: 0x02, WRITE_ZEROES: 0x08, DATASET_MANAGEMENT: 0x09 } as const;

/**
 * Status field values as (SCT << 8) | SC; DNR (do not retry) is bit 14 of the 15-bit field. A CQE's
 * DW3 upper half holds (status << 1) | phase.
 */
export const SC = {
  SUCCESS: 0x000,
  INVALID_OPCODE: 0x001,
  INVALID_FIELD: 0x002,
  CID_CONFLICT: 0x003,
  DATA_TRANSFER_ERROR: 0x004,
  INTERNAL_ERROR: 0x006,
  ABORTED_SQ_DELETION: 0x008,
  INVALID_NAMESPACE: 0x00b,
  COMMAND_SEQUENCE_ERROR: 0x00c,
  INVALID_PRP_OFFSET: 0x013,
  LBA_OUT_OF_RANGE: 0x080,
  // Command specific (SCT 1).
  CQ_INVALID: 0x100,
  INVALID_QID: 0x101,
  INVALID_QSIZE: 0x102,
  AER_LIMIT_EXCEEDED: 0x105,
  INVALID_VECTOR: 0x108,
  INVALID_LOG_PAGE: 0x109,
  INVALID_QUEUE_DELETION: 0x10c,
  FEATURE_NOT_SAVEABLE: 0x10d,
  // Media and data integrity errors (SCT 2).
  WRITE_FAULT: 0x280,
  UNRECOVERED_READ_ERROR: 0x281,
} as const;

export const DNR = 0x4000;

/** Feature identifiers (Get/Set Features CDW10 bits 7:0). */
export const FID = {
  ARBITRATION: 0x01, POWER_MANAGEMENT: 0x02, TEMPERATURE_THRESHOLD: 0x04, ERROR_RECOVERY: 0x05,
  VOLATILE_WRITE_CACHE: 0x06, NUMBER_OF_QUEUES: 0x07, INTERRUPT_COALESCING: 0x08, INTERRUPT_VECTOR_CONFIG: 0x09,
  WRITE_ATOMICITY: 0x0a, ASYNC_EVENT_CONFIG: 0x0b,
} as const;

/** Log page identifiers. */
export const LID = { ERROR_INFO: 0x01, SMART: 0x02, FIRMWARE_SLOT: 0x03 } as const;

/** Identify CNS values. */
export const CNS = { NAMESPACE: 0x00, CONTROLLER: 0x01, ACTIVE_NS_LIST: 0x02, NS_DESCRIPTORS: 0x03 } as const;

/** Asynchronous event types (CQE DW0 bits 2:0) and the Error type's information codes. */
export const AER_TYPE_ERROR = 0;
export const AER_INFO_INVALID_DOORBELL_REGISTER = 0x00;
export const AER_INFO_INVALID_DOORBELL_VALUE = 0x01;

export const NSID_BROADCAST = 0xffff_ffff;
