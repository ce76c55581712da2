// Checks the ioregionfd_cmd / ioregionfd_resp codec against the byte images of docs/ioregionfd.md §4.7 and round-trips every field combination in both layouts.

import test from 'ava';
import { ProtocolError } from './errors';
import {
  IOREGIONFD_CMD_READ,
  IOREGIONFD_CMD_WRITE,
  IOREGIONFD_MSG_SIZE,
  IoregionfdCmd,
  WireLayout,
  codeToSize,
  decodeCmd,
  decodeCmdInto,
  decodeResp,
  encodeCmd,
  encodeCmdFields,
  encodeResp,
  sizeToCode,
  truncateToSize,
} from './ioregionfd-wire';

const LAYOUTS: readonly WireLayout[] = ['v1', 'v3'];
const SIZES = [1, 2, 4, 8] as const;

/** 32 bytes from a hex string; whitespace and '|' separators are ignored. */
function hexBytes(hex: string): Uint8Array {
  const clean = hex.replace(/[\s|]/g, '');
  if (clean.length !== IOREGIONFD_MSG_SIZE * 2) throw new Error(`vector has ${clean.length / 2} bytes`);
  return Uint8Array.from(clean.match(/../g)!, (b) => parseInt(b, 16));
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
}

/** A 32-byte message buffer pre-filled with garbage, so a test sees any padding the encoder forgot to zero. */
function dirtyMessage(): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(IOREGIONFD_MSG_SIZE).fill(0xa5);
  return { bytes, view: new DataView(bytes.buffer) };
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const WRITE4_V1 = '61 00 00 00 00 00 00 00 | cd ab 00 00 00 00 00 00 | 10 00 00 00 00 00 00 00 | 44 33 22 11 00 00 00 00';
const WRITE4_V3 = '01 12 00 00 00 00 00 00 | cd ab 00 00 00 00 00 00 | 10 00 00 00 00 00 00 00 | 44 33 22 11 00 00 00 00';
const READ2_V1 = '50 00 00 00 00 00 00 00 | 01 00 00 00 00 00 00 00 | 06 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00';
const READ2_V3 = '00 11 00 00 00 00 00 00 | 01 00 00 00 00 00 00 00 | 06 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00';
const POSTED1 = '01 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00 | 7f 00 00 00 00 00 00 00';
const DOORBELL_V3 = '01 00 00 00 00 00 00 00 | 55 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00';
const RESP = '88 77 66 55 44 33 22 11 | 00 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00';

const write4: IoregionfdCmd = { cmd: IOREGIONFD_CMD_WRITE, size: 4, resp: true, userData: 0xabcdn, offset: 0x10n, data: 0x11223344n };
const read2: IoregionfdCmd = { cmd: IOREGIONFD_CMD_READ, size: 2, resp: true, userData: 1n, offset: 6n, data: 0n };
const posted1: IoregionfdCmd = { cmd: IOREGIONFD_CMD_WRITE, size: 1, resp: false, userData: 0n, offset: 0n, data: 0x7fn };

const imageCases: ReadonlyArray<[string, WireLayout, IoregionfdCmd, string]> = [
  ['4-byte non-posted WRITE 0x11223344 @0x10 user_data 0xABCD', 'v1', write4, WRITE4_V1],
  ['4-byte non-posted WRITE 0x11223344 @0x10 user_data 0xABCD', 'v3', write4, WRITE4_V3],
  ['2-byte READ @6 user_data 1', 'v1', read2, READ2_V1],
  ['2-byte READ @6 user_data 1', 'v3', read2, READ2_V3],
  ['1-byte posted WRITE 0x7F @0', 'v1', posted1, POSTED1],
  ['1-byte posted WRITE 0x7F @0', 'v3', posted1, POSTED1],
];

for (const [what, layout, cmd, hex] of imageCases) {
  test(`§4.7 ${layout}: ${what} encodes to the exact byte image`, (t) => {
    const { bytes, view } = dirtyMessage();
    encodeCmd(layout, cmd, view);
    t.is(toHex(bytes), toHex(hexBytes(hex)));
  });

  test(`§4.7 ${layout}: the byte image of ${what} decodes to its fields`, (t) => {
    t.deepEqual(decodeCmd(layout, viewOf(hexBytes(hex))), cmd);
  });
}

test('§4.7 2-byte READ: v1 byte 0 is 0x50 and v3 bytes 0..1 are 00 11', (t) => {
  const v1 = dirtyMessage();
  const v3 = dirtyMessage();
  encodeCmd('v1', read2, v1.view);
  encodeCmd('v3', read2, v3.view);
  t.is(v1.bytes[0], 0x50);
  t.deepEqual(Array.from(v3.bytes.subarray(0, 2)), [0x00, 0x11]);
});

test('§4.7 a 1-byte posted WRITE is byte-identical in the v1 and v3 layouts', (t) => {
  const v1 = dirtyMessage();
  const v3 = dirtyMessage();
  encodeCmd('v1', posted1, v1.view);
  encodeCmd('v3', posted1, v3.view);
  t.deepEqual(v1.bytes, v3.bytes);
});

test('§4.7 the v1 and v3 encodings of a non-posted access differ (not wire compatible)', (t) => {
  const v1 = dirtyMessage();
  const v3 = dirtyMessage();
  encodeCmd('v1', write4, v1.view);
  encodeCmd('v3', write4, v3.view);
  t.notDeepEqual(v1.bytes, v3.bytes);
});

test('§4.7 v3 FAST_MMIO doorbell (size 0, user_data 0x55) encodes to 01 00 … + user_data, offset 0, data 0', (t) => {
  const { bytes, view } = dirtyMessage();
  encodeCmd('v3', { cmd: IOREGIONFD_CMD_WRITE, size: 0, resp: false, userData: 0x55n, offset: 0n, data: 0xdeadn }, view);
  t.is(toHex(bytes), toHex(hexBytes(DOORBELL_V3)));
});

test('§4.7 v3 FAST_MMIO doorbell is byte-identical to a posted 1-byte WRITE of 0 and decodes as size 1', (t) => {
  const doorbell = dirtyMessage();
  const write = dirtyMessage();
  encodeCmd('v3', { cmd: IOREGIONFD_CMD_WRITE, size: 0, resp: false, userData: 0x55n, offset: 0n, data: 0n }, doorbell.view);
  encodeCmd('v3', { cmd: IOREGIONFD_CMD_WRITE, size: 1, resp: false, userData: 0x55n, offset: 0n, data: 0n }, write.view);
  t.deepEqual(doorbell.bytes, write.bytes);
  t.deepEqual(decodeCmd('v3', doorbell.view), { cmd: IOREGIONFD_CMD_WRITE, size: 1, resp: false, userData: 0x55n, offset: 0n, data: 0n });
});

test('v1 layout refuses to encode a size-0 (FAST_MMIO) access with RangeError', (t) => {
  const { bytes, view } = dirtyMessage();
  t.throws(() => encodeCmd('v1', { ...posted1, size: 0 }, view), { instanceOf: RangeError });
  t.true(bytes.every((b) => b === 0xa5), 'nothing was written');
});

test('§4.7 response carrying 0x1122334455667788 encodes to 88 77 … 11 + 24 zero bytes', (t) => {
  const { bytes, view } = dirtyMessage();
  encodeResp(0x1122334455667788n, view);
  t.is(toHex(bytes), toHex(hexBytes(RESP)));
  t.is(decodeResp(view), 0x1122334455667788n);
});

test('§4.7 a 2-byte read completes with 0x7788 from response 0x1122334455667788', (t) => {
  const data = decodeResp(viewOf(hexBytes(RESP)));
  t.is(truncateToSize(data, 2), 0x7788n);
});

test('truncateToSize keeps exactly the low size bytes for every size', (t) => {
  const v = 0x1122334455667788n;
  t.is(truncateToSize(v, 0), 0n);
  t.is(truncateToSize(v, 1), 0x88n);
  t.is(truncateToSize(v, 2), 0x7788n);
  t.is(truncateToSize(v, 4), 0x55667788n);
  t.is(truncateToSize(v, 8), v);
  t.throws(() => truncateToSize(v, 3), { instanceOf: RangeError });
});

test('response pad is ignored on decode: non-zero pad decodes the same data', (t) => {
  const bytes = hexBytes(RESP);
  bytes.fill(0xff, 8);
  t.is(decodeResp(viewOf(bytes)), 0x1122334455667788n);
});

test('encodeResp zeroes the 24-byte pad and rejects values outside u64', (t) => {
  const { bytes, view } = dirtyMessage();
  encodeResp(0n, view);
  t.true(bytes.every((b) => b === 0));
  t.throws(() => encodeResp(-1n, view), { instanceOf: RangeError });
  t.throws(() => encodeResp(1n << 64n, view), { instanceOf: RangeError });
});

// Values that use every byte, so a field written at the wrong offset or width shows up.
const USER_DATA = 0xfedcba9876543210n;
const OFFSET = 0x0123456789abcdefn;
const DATA = 0x8877665544332211n;

for (const layout of LAYOUTS) {
  for (const cmd of [IOREGIONFD_CMD_READ, IOREGIONFD_CMD_WRITE]) {
    for (const size of SIZES) {
      for (const resp of [false, true]) {
        const name = `${layout} round trip: cmd ${cmd} size ${size} resp ${resp}`;
        test(name, (t) => {
          const { view } = dirtyMessage();
          encodeCmd(layout, { cmd, size, resp, userData: USER_DATA, offset: OFFSET, data: DATA }, view);
          t.deepEqual(decodeCmd(layout, view), {
            cmd,
            size,
            resp,
            userData: USER_DATA,
            offset: OFFSET,
            data: truncateToSize(DATA, size),
          });
        });
      }
    }
  }
}

for (const layout of LAYOUTS) {
  test(`${layout}: encodeCmd masks data to size (0x1122334455667788 as 2 bytes puts 88 77 on the wire)`, (t) => {
    const { bytes, view } = dirtyMessage();
    encodeCmd(layout, { cmd: IOREGIONFD_CMD_WRITE, size: 2, resp: true, userData: 0n, offset: 0n, data: 0x1122334455667788n }, view);
    t.deepEqual(Array.from(bytes.subarray(24, 32)), [0x88, 0x77, 0, 0, 0, 0, 0, 0]);
    t.is(decodeCmd(layout, view).data, 0x7788n);
  });

  test(`${layout}: data field holds the zero-extended guest value for each size`, (t) => {
    for (const size of SIZES) {
      const { bytes, view } = dirtyMessage();
      encodeCmd(layout, { cmd: IOREGIONFD_CMD_WRITE, size, resp: false, userData: 0n, offset: 0n, data: 0xffff_ffff_ffff_ffffn }, view);
      const expected = Array.from({ length: 8 }, (_, i) => (i < size ? 0xff : 0));
      t.deepEqual(Array.from(bytes.subarray(24, 32)), expected, `size ${size}`);
    }
  });

  test(`${layout}: decodeCmd rejects cmd 2 with ProtocolError EPROTO`, (t) => {
    const bytes = hexBytes(layout === 'v1' ? WRITE4_V1 : WRITE4_V3);
    bytes[0] = layout === 'v1' ? 0x62 : 0x02;
    const err = t.throws(() => decodeCmd(layout, viewOf(bytes)), { instanceOf: ProtocolError });
    t.is(err?.code, 'EPROTO');
  });

  test(`${layout}: encodeCmdFields writes the same bytes as encodeCmd`, (t) => {
    for (const size of SIZES) {
      const a = dirtyMessage();
      const b = dirtyMessage();
      encodeCmd(layout, { cmd: IOREGIONFD_CMD_WRITE, size, resp: true, userData: USER_DATA, offset: OFFSET, data: DATA }, a.view);
      encodeCmdFields(layout, b.view, 0, IOREGIONFD_CMD_WRITE, size, true, USER_DATA, OFFSET, DATA);
      t.deepEqual(a.bytes, b.bytes, `size ${size}`);
    }
  });

  test(`${layout}: encodeCmd rejects sizes other than 1, 2, 4, 8 and u64 fields out of range`, (t) => {
    const { bytes, view } = dirtyMessage();
    for (const size of [3, 5, 16, -1, 1.5]) {
      t.throws(() => encodeCmd(layout, { ...write4, size }, view), { instanceOf: RangeError }, `size ${size}`);
    }
    t.throws(() => encodeCmd(layout, { ...write4, offset: -1n }, view), { instanceOf: RangeError });
    t.throws(() => encodeCmd(layout, { ...write4, userData: 1n << 64n }, view), { instanceOf: RangeError });
    t.true(bytes.every((b) => b === 0xa5), 'a rejected command leaves the buffer untouched');
  });

  test(`${layout}: encode into a view too short for 32 bytes throws RangeError before writing`, (t) => {
    const bytes = new Uint8Array(40).fill(0xa5);
    const view = new DataView(bytes.buffer);
    t.throws(() => encodeCmd(layout, write4, view, 9), { instanceOf: RangeError });
    t.throws(() => encodeResp(1n, view, 9), { instanceOf: RangeError });
    t.true(bytes.every((b) => b === 0xa5));
  });

  test(`${layout}: decoding fewer than 32 bytes throws ProtocolError`, (t) => {
    const view = new DataView(new ArrayBuffer(31));
    t.throws(() => decodeCmd(layout, view), { instanceOf: ProtocolError });
    t.throws(() => decodeResp(view), { instanceOf: ProtocolError });
  });

  test(`${layout}: encode and decode honour a view with a non-zero byteOffset and an off argument`, (t) => {
    const backing = new Uint8Array(100).fill(0xee);
    const view = new DataView(backing.buffer, 7, 60); // frame lives at backing[7 + 5 .. 7 + 5 + 32)
    const cmd: IoregionfdCmd = { cmd: IOREGIONFD_CMD_WRITE, size: 4, resp: true, userData: 0xabcdn, offset: 0x10n, data: 0x11223344n };
    encodeCmd(layout, cmd, view, 5);
    t.is(toHex(backing.subarray(12, 44)), toHex(hexBytes(layout === 'v1' ? WRITE4_V1 : WRITE4_V3)));
    t.true(backing.subarray(0, 12).every((b) => b === 0xee), 'bytes before the frame untouched');
    t.true(backing.subarray(44).every((b) => b === 0xee), 'bytes after the frame untouched');
    t.deepEqual(decodeCmd(layout, view, 5), cmd);
    t.deepEqual(decodeCmd(layout, new DataView(backing.buffer, 12, 32)), cmd);

    encodeResp(0x1122334455667788n, view, 5);
    t.is(toHex(backing.subarray(12, 44)), toHex(hexBytes(RESP)));
    t.is(decodeResp(new DataView(backing.buffer, 12, 32)), 0x1122334455667788n);
  });
}

test('v1: every reserved cmd nibble value 2..15 is rejected with EPROTO', (t) => {
  for (let nibble = 2; nibble <= 15; nibble++) {
    const bytes = hexBytes(WRITE4_V1);
    bytes[0] = (bytes[0] & 0xf0) | nibble;
    const err = t.throws(() => decodeCmd('v1', viewOf(bytes)), { instanceOf: ProtocolError }, `cmd ${nibble}`);
    t.is(err?.code, 'EPROTO');
  }
});

test('v3: every cmd byte other than 0 and 1 is rejected with EPROTO', (t) => {
  for (let cmd = 2; cmd <= 0xff; cmd++) {
    const bytes = hexBytes(WRITE4_V3);
    bytes[0] = cmd;
    t.throws(() => decodeCmd('v3', viewOf(bytes)), { instanceOf: ProtocolError }, `cmd ${cmd}`);
  }
});

test('v3: size_exponent 4..15 is an invalid size code and rejected with EPROTO', (t) => {
  for (let exp = 4; exp <= 15; exp++) {
    const bytes = hexBytes(WRITE4_V3);
    bytes[1] = 0x10 | exp;
    const err = t.throws(() => decodeCmd('v3', viewOf(bytes)), { instanceOf: ProtocolError }, `exponent ${exp}`);
    t.is(err?.code, 'EPROTO');
  }
});

test('v1: padding word, info bit 7 and info bits 31..8 are ignored on decode', (t) => {
  const bytes = hexBytes(WRITE4_V1);
  bytes[0] |= 0x80;
  bytes.fill(0xff, 1, 8);
  t.deepEqual(decodeCmd('v1', viewOf(bytes)), write4);
});

test('v3: byte 1 bits 7..5 and padding bytes 2..7 are ignored on decode', (t) => {
  const bytes = hexBytes(WRITE4_V3);
  bytes[1] |= 0xe0;
  bytes.fill(0xff, 2, 8);
  t.deepEqual(decodeCmd('v3', viewOf(bytes)), write4);
});

test('v1 and v3 cannot read each other: a v3 4-byte non-posted WRITE decodes differently under v1', (t) => {
  // v3 byte 1 (0x12) lands in v1 reserved bits, so v1 sees a 1-byte posted WRITE.
  const asV1 = decodeCmd('v1', viewOf(hexBytes(WRITE4_V3)));
  t.is(asV1.size, 1);
  t.false(asV1.resp);
});

test('decodeCmdInto fills and returns the object it was given', (t) => {
  const out: IoregionfdCmd = { cmd: 9, size: 9, resp: false, userData: 9n, offset: 9n, data: 9n };
  const got = decodeCmdInto('v3', viewOf(hexBytes(READ2_V3)), 0, out);
  t.is(got, out);
  t.deepEqual(out, read2);
});

test('encodeCmdFields can inject an unknown cmd that fits the field, and refuses one that does not', (t) => {
  const { bytes, view } = dirtyMessage();
  encodeCmdFields('v1', view, 0, 15, 1, true, 0n, 0n, 0n);
  t.is(bytes[0], 0x4f);
  t.throws(() => decodeCmd('v1', view), { instanceOf: ProtocolError });
  t.throws(() => encodeCmdFields('v1', view, 0, 16, 1, true, 0n, 0n, 0n), { instanceOf: RangeError });
  encodeCmdFields('v3', view, 0, 0xff, 1, true, 0n, 0n, 0n);
  t.is(bytes[0], 0xff);
  t.throws(() => encodeCmdFields('v3', view, 0, 0x100, 1, true, 0n, 0n, 0n), { instanceOf: RangeError });
});

test('sizeToCode and codeToSize map 1, 2, 4, 8 bytes to codes 0..3 and back', (t) => {
  t.deepEqual(SIZES.map(sizeToCode), [0, 1, 2, 3]);
  t.deepEqual([0, 1, 2, 3].map(codeToSize), [1, 2, 4, 8]);
  t.is(sizeToCode(0), 0, 'FAST_MMIO leaves the size code 0');
  t.throws(() => sizeToCode(3), { instanceOf: RangeError });
  t.throws(() => codeToSize(4), { instanceOf: ProtocolError });
});
