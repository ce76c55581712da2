// Runs the conformance suite over every device in the registry (a new device is covered by its
// registry line), and shows the suite catches the bugs it exists for.

import test from 'ava';
import { checkConformance, ConformanceOptions } from '../sdk/conformance';
import type { DeviceDefinition, DeviceModel } from '../sdk/device-model';
import { DEVICES } from './index';

/** Per-device options, only where the defaults do not fit. */
const OPTIONS: Record<string, ConformanceOptions> = {
  // The fake eventfds never deliver a partner; a short timeout keeps a mistaken real wait short.
  rendezvous: { config: { timeout_ms: 1 } },
};

/** Devices this in-memory loop cannot create, and where the suite runs for them instead. */
const EXEMPT: Record<string, string> = {
  'qemu-remote': 'its create() starts a QEMU process; qemu-remote/qemu-remote.test.ts runs the suite over an in-memory remote, and over QEMU\'s pci-testdev when QEMU is installed',
};

for (const [name, def] of Object.entries(DEVICES)) {
  if (Object.hasOwn(EXEMPT, name)) {
    test.skip(`device '${name}' is exempt here: ${EXEMPT[name]}`, () => undefined);
    continue;
  }
  test(`device '${name}' passes the conformance suite`, (t) => {
    t.is(def.name, name, 'registry key and definition name agree');
    t.deepEqual(checkConformance(def, OPTIONS[name]), []);
  });
}

/** A 16-byte scratch device; `flaw` breaks one thing. */
function scratchDevice(flaw: 'none' | 'throws' | 'no-reset' | 'wide' | 'number' | 'random' | 'powerOn' | 'eventfd'): DeviceDefinition {
  return {
    name: `scratch-${flaw}`,
    description: 'test double',
    regionSize: 16,
    create(): DeviceModel {
      const regs = new Uint8Array(16);
      if (flaw === 'powerOn') regs[3] = 0x77;
      const readByte = (o: bigint) => (o < 16n ? BigInt(regs[Number(o)]) : 0n);
      return {
        read(offset, size) {
          if (flaw === 'throws' && offset === 5n && size === 2) throw new Error('boom');
          if (flaw === 'wide') return 0x1ffn;
          if (flaw === 'number') return 5 as unknown as bigint;
          if (flaw === 'random' && offset === 0n) return BigInt(Math.floor(Math.random() * 256)) & 0xffn;
          let v = 0n;
          for (let i = size - 1; i >= 0; i--) v = (v << 8n) | readByte(offset + BigInt(i));
          return v;
        },
        write(offset, size, value) {
          for (let i = 0; i < size; i++) if (offset + BigInt(i) < 16n) regs[Number(offset) + i] = Number((value >> BigInt(8 * i)) & 0xffn);
        },
        onEventfd(name) {
          if (flaw === 'eventfd' && name === '') throw new TypeError('empty name');
        },
        reset() {
          if (flaw !== 'no-reset') regs.fill(0);
        },
      };
    },
  };
}

test('a correct scratch device passes, so the flaws below are what the suite reports', (t) => {
  t.deepEqual(checkConformance(scratchDevice('none')), []);
});

test('a model that throws at one offset/size is caught with that offset and size', (t) => {
  const v = checkConformance(scratchDevice('throws'));
  t.true(v.some((l) => l.includes('read(offset 0x5, size 2) threw Error: boom')), v.join('\n'));
});

test('a reset() that does not reset is caught by the sweep after writes + reset()', (t) => {
  const v = checkConformance(scratchDevice('no-reset'));
  t.true(v.some((l) => l.startsWith('after writes and reset():')), v.join('\n'));
});

test('a power-on state that differs from the reset state is caught', (t) => {
  const v = checkConformance(scratchDevice('powerOn'));
  t.true(v.some((l) => l.startsWith('after reset() versus power-on:') && l.includes('offset 0x3')), v.join('\n'));
});

test('a read wider than its access size is caught', (t) => {
  const v = checkConformance(scratchDevice('wide'));
  t.true(v.some((l) => l.includes('size 1) returned 0x1ff, outside the 1-byte range')), v.join('\n'));
});

test('a read returning a number instead of a bigint is caught', (t) => {
  const v = checkConformance(scratchDevice('number'));
  t.true(v.some((l) => l.includes('returned number 5, not a bigint')), v.join('\n'));
});

test('a model whose reads depend on something besides its accesses fails the replay comparison', (t) => {
  const v = checkConformance(scratchDevice('random'));
  t.true(v.some((l) => l.includes('depends on something besides its accesses') || l.startsWith('after')), v.join('\n'));
  t.deepEqual(checkConformance(scratchDevice('random'), { deterministic: false, volatile: [{ offset: 0, size: 1 }] }), [],
    'declared volatile, the same model passes');
});

test('an onEventfd that throws for some name is caught with the name', (t) => {
  const v = checkConformance(scratchDevice('eventfd'));
  t.true(v.some((l) => l.includes('onEventfd("", ') && l.includes('TypeError: empty name')), v.join('\n'));
});

test('a create() that throws on the given config is reported, not thrown', (t) => {
  const v = checkConformance(DEVICES.rendezvous, { config: { timeout_ms: 'soon' } });
  t.is(v.length, 1);
  t.regex(v[0], /create\(\) threw Error: config\.timeout_ms/);
});

test('the violation list is capped and says how many were left out', (t) => {
  const v = checkConformance(scratchDevice('wide'), { maxViolations: 3 });
  t.is(v.length, 4);
  t.regex(v[3], /^\.\.\. and \d+ more violations$/);
});
