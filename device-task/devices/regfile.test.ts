// The regfile device in memory: its DMA engine copies guest memory and turns a bad address into an
// error bit, CONTROL raises the 'irq' signal, STATUS is write-1-to-clear, CONTROL resets the device.

import test from 'ava';
import { fakeDeviceContext } from '../sdk/conformance';
import {
  CONTROL_DMA, CONTROL_IRQ, CONTROL_RESET, REGFILE_ID, regfile, STATUS_DMA_DONE, STATUS_DMA_ERROR, STATUS_IRQ,
} from './regfile';

const ID = 0x00n;
const SCRATCH0 = 0x08n;
const STATUS = 0x18n;
const CONTROL = 0x1cn;
const DMA_SRC = 0x20n;
const DMA_DST = 0x28n;
const DMA_LEN = 0x30n;
const READS = 0x38n;

function device() {
  const fake = fakeDeviceContext({ eventfds: ['irq'] });
  return { ...fake, dev: regfile.create(fake.ctx) };
}

function dma(dev: ReturnType<typeof device>['dev'], src: bigint, dst: bigint, len: bigint): void {
  dev.write(DMA_SRC, 8, src, 0n);
  dev.write(DMA_DST, 8, dst, 0n);
  dev.write(DMA_LEN, 4, len, 0n);
  dev.write(CONTROL, 4, CONTROL_DMA, 0n);
}

test('the ID register reads its constant and ignores writes', (t) => {
  const { dev } = device();
  t.is(dev.read(ID, 4, 0n), REGFILE_ID);
  dev.write(ID, 4, 0n, 0n);
  t.is(dev.read(ID, 4, 0n), REGFILE_ID);
});

test('DMA copies DMA_LEN bytes of guest memory from DMA_SRC to DMA_DST and sets DMA done', (t) => {
  const { dev, ram } = device();
  const pattern = Uint8Array.from({ length: 300 }, (_, i) => (i * 7 + 1) & 0xff);
  ram.set(pattern, 0x1000);
  dma(dev, 0x1000n, 0x8003n, 300n);
  t.deepEqual(ram.subarray(0x8003, 0x8003 + 300), pattern);
  t.is(ram[0x8003 + 300], 0, 'not one byte more');
  t.is(dev.read(STATUS, 4, 0n), STATUS_DMA_DONE);
});

test('DMA from or to an address outside guest RAM sets the error bit, copies nothing and does not throw', (t) => {
  const { dev, ram } = device();
  ram.fill(0xab, 0x1000, 0x1100);
  const cases: [bigint, bigint, bigint][] = [
    [BigInt(ram.length) - 8n, 0x2000n, 16n], // source straddles the end of RAM
    [0x1000n, BigInt(ram.length), 1n], // destination just past the end
    [0xffff_ffff_ffff_fff0n, 0x2000n, 0x20n], // source wraps u64
    [0x1000n, 0x2000n, 0xffff_ffffn], // longer than the engine allows
  ];
  for (const [src, dst, len] of cases) {
    dev.write(STATUS, 4, 0xffn, 0n);
    t.notThrows(() => dma(dev, src, dst, len));
    t.is(dev.read(STATUS, 4, 0n), STATUS_DMA_ERROR, `src 0x${src.toString(16)} dst 0x${dst.toString(16)} len 0x${len.toString(16)}`);
  }
  t.true(ram.subarray(0x2000, 0x2100).every((b) => b === 0), 'nothing reached the destination');
});

test("CONTROL's IRQ bit raises the 'irq' eventfd once per write and sets STATUS.IRQ", (t) => {
  const { dev, signal } = device();
  dev.write(CONTROL, 4, CONTROL_IRQ, 0n);
  t.deepEqual(signal('irq')?.counts, [1n]);
  t.is(dev.read(STATUS, 4, 0n) & STATUS_IRQ, STATUS_IRQ);
  dev.write(CONTROL, 4, CONTROL_IRQ, 0n);
  t.deepEqual(signal('irq')?.counts, [1n, 1n]);
  dev.write(CONTROL, 4, 0n, 0n);
  t.deepEqual(signal('irq')?.counts, [1n, 1n], 'a CONTROL write without the bit raises nothing');
});

test('without an irq eventfd the IRQ bit still sets STATUS and nothing throws', (t) => {
  const fake = fakeDeviceContext({ eventfds: [] });
  const dev = regfile.create(fake.ctx);
  t.notThrows(() => dev.write(CONTROL, 4, CONTROL_IRQ, 0n));
  t.is(dev.read(STATUS, 4, 0n), STATUS_IRQ);
});

test('STATUS is write-1-to-clear: 1s clear their bits, 0s keep them, nothing sets them', (t) => {
  const { dev } = device();
  dma(dev, 0n, 0x100n, 8n);
  dev.write(CONTROL, 4, CONTROL_IRQ, 0n);
  t.is(dev.read(STATUS, 4, 0n), STATUS_DMA_DONE | STATUS_IRQ);
  dev.write(STATUS, 4, 0n, 0n);
  t.is(dev.read(STATUS, 4, 0n), STATUS_DMA_DONE | STATUS_IRQ);
  dev.write(STATUS, 4, STATUS_IRQ | STATUS_DMA_ERROR, 0n);
  t.is(dev.read(STATUS, 4, 0n), STATUS_DMA_DONE);
  dev.write(STATUS, 1, STATUS_DMA_DONE, 0n);
  t.is(dev.read(STATUS, 4, 0n), 0n, 'a 1-byte write clears too');
});

test('the CONTROL reset bit restores scratch, STATUS, DMA registers and the READS counter', (t) => {
  const { dev } = device();
  dev.write(SCRATCH0, 8, 0x1234n, 0n);
  dma(dev, 0n, 0x100n, 4n);
  dev.read(ID, 4, 0n);
  t.not(dev.read(READS, 8, 0n), 0n);
  dev.write(CONTROL, 4, CONTROL_RESET, 0n);
  t.is(dev.read(READS, 8, 0n), 1n, 'the counter restarted: this read is the first');
  t.is(dev.read(SCRATCH0, 8, 0n), 0n);
  t.is(dev.read(STATUS, 4, 0n), 0n);
  t.is(dev.read(DMA_LEN, 4, 0n), 0n);
  t.is(dev.read(ID, 4, 0n), REGFILE_ID);
});
