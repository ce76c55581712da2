// The testdev echo device: one 64-bit value, written and read back with the access's size at any offset.

import test from 'ava';
import { fakeDeviceContext } from '../sdk/conformance';
import { testdev } from './testdev';

const dev = () => testdev.create(fakeDeviceContext().ctx);

test('a 4-byte write then 1, 2 and 4-byte reads give the low 1, 2 and 4 bytes (the kvm-unit-tests scenario)', (t) => {
  const d = dev();
  d.write(0n, 4, 0x11223344n, 0n);
  t.is(d.read(4n, 1, 0n), 0x44n);
  t.is(d.read(4n, 2, 0n), 0x3344n);
  t.is(d.read(4n, 4, 0n), 0x11223344n);
  t.is(d.read(4n, 8, 0n), 0x11223344n);
});

test('a narrower write replaces only the low bytes; an 8-byte write replaces all', (t) => {
  const d = dev();
  d.write(0n, 8, 0x8877665544332211n, 0n);
  d.write(0n, 1, 0xaan, 0n);
  t.is(d.read(0n, 8, 0n), 0x88776655443322aan);
  d.write(0n, 2, 0xbbccn, 0n);
  t.is(d.read(0n, 8, 0n), 0x887766554433bbccn);
  d.write(0n, 8, 1n, 0n);
  t.is(d.read(0n, 8, 0n), 1n);
});

test('the offset and user_data do not matter', (t) => {
  const d = dev();
  d.write(0x7n, 2, 0xbeefn, 5n);
  t.is(d.read(0xffff_ffff_ffff_fff8n, 2, 9n), 0xbeefn);
});

test('reset clears the value', (t) => {
  const d = dev();
  d.write(0n, 8, 0x1234n, 0n);
  d.reset();
  t.is(d.read(0n, 8, 0n), 0n);
});
