// Checks the irqchip model in memory: line sources and edges, delivery order and the interrupt flag,
// the EOI (edge-triggered lines, resample acknowledgement), targeting, and the main thread's side
// (waking the target vCPU, hearing EOIs of resampled GSIs).

import test from 'ava';
import { Irqchip } from './irqchip';
import { InterruptibleCpu, LocalApic, newIrqchipState, NR_GSIS, setLine, SOURCE_RESAMPLE, SOURCE_USER } from './irqchip-state';
import { ATTN_IRQ } from './vcpu-contract';
import type { Vm } from './vm';

/** A vCPU with handlers that log "gsi" and may run extra code. */
function cpu(vcpuId = 0): InterruptibleCpu & { log: number[] } {
  const log: number[] = [];
  const c = { vcpuId, interruptsEnabled: true, handlers: new Map<number, (v: number) => void>(), log };
  return c;
}

function handle(c: ReturnType<typeof cpu>, gsi: number, extra?: () => void): void {
  c.handlers.set(gsi, (v) => {
    c.log.push(v);
    extra?.();
  });
}

test('setLine: a rising edge of the OR of the sources makes the GSI pending, once', (t) => {
  const words = new Int32Array(newIrqchipState());
  const apic = new LocalApic(words.buffer as SharedArrayBuffer);
  t.true(setLine(words, 5, SOURCE_USER, true));
  t.false(setLine(words, 5, SOURCE_RESAMPLE, true), 'already high: no edge');
  t.false(setLine(words, 5, SOURCE_USER, false), 'still high through the other source');
  t.false(setLine(words, 5, SOURCE_RESAMPLE, false));
  t.is(apic.pending(0), 1 << 5);
  t.false(setLine(words, NR_GSIS, SOURCE_USER, true), 'no route beyond GSI 23');
  t.false(setLine(words, -1, SOURCE_USER, true));
});

test('deliver: lowest GSI first, with interrupts disabled inside the handler and restored after', (t) => {
  const state = newIrqchipState();
  const words = new Int32Array(state);
  const apic = new LocalApic(state);
  const c = cpu();
  const flags: boolean[] = [];
  for (const g of [3, 9, 12]) handle(c, g, () => flags.push(c.interruptsEnabled));
  for (const g of [12, 3, 9]) {
    setLine(words, g, SOURCE_USER, true);
    setLine(words, g, SOURCE_USER, false);
  }
  const more = [apic.deliver(c), apic.deliver(c), apic.deliver(c)];
  t.deepEqual(c.log, [3, 9, 12]);
  t.deepEqual(more, [true, true, false], 'one per boundary, telling whether more are ready');
  t.deepEqual(flags, [false, false, false]);
  t.true(c.interruptsEnabled);
  t.is(apic.delivered, 3);
  t.is(apic.pending(0), 0);
});

test('deliver: nothing happens while interrupts are disabled; the GSI stays pending', (t) => {
  const state = newIrqchipState();
  const apic = new LocalApic(state);
  const c = cpu();
  handle(c, 4);
  c.interruptsEnabled = false;
  setLine(new Int32Array(state), 4, SOURCE_USER, true);
  t.false(apic.deliver(c), 'nothing to take at the next boundary either (sti will look again)');
  t.deepEqual(c.log, []);
  c.interruptsEnabled = true;
  apic.deliver(c);
  t.deepEqual(c.log, [4]);
});

test('deliver: only the target vCPU takes interrupts', (t) => {
  const state = newIrqchipState();
  const apic = new LocalApic(state);
  const other = cpu(1);
  handle(other, 4);
  setLine(new Int32Array(state), 4, SOURCE_USER, true);
  t.is(apic.pending(1), 0);
  apic.deliver(other);
  t.deepEqual(other.log, []);
});

test('edge-triggered: a line held asserted through the EOI fires once; lowering and raising fires again', (t) => {
  const state = newIrqchipState();
  const words = new Int32Array(state);
  const apic = new LocalApic(state);
  const c = cpu();
  handle(c, 7);
  setLine(words, 7, SOURCE_USER, true);
  t.false(apic.deliver(c), 'not pending again after the EOI');
  t.deepEqual(c.log, [7]);
  setLine(words, 7, SOURCE_USER, false);
  setLine(words, 7, SOURCE_USER, true);
  apic.deliver(c);
  t.deepEqual(c.log, [7, 7]);
});

test('edge-triggered: a pulse whose lowering comes after the guest\'s EOI still fires once', (t) => {
  const state = newIrqchipState();
  const words = new Int32Array(state);
  const apic = new LocalApic(state);
  const c = cpu();
  handle(c, 5);
  setLine(words, 5, SOURCE_USER, true);
  t.false(apic.deliver(c));
  setLine(words, 5, SOURCE_USER, false);
  t.false(apic.deliver(c));
  t.deepEqual(c.log, [5]);
});

test('EOI: a resampled GSI drops the resample source and reports the acknowledgement', (t) => {
  const state = newIrqchipState();
  const words = new Int32Array(state);
  const chip = new Irqchip(fakeVm(state, []).vm);
  chip.setResample(6, true);
  const apic = new LocalApic(state);
  const c = cpu();
  handle(c, 6, () => t.false(setLine(words, 6, SOURCE_RESAMPLE, true), 'a second raise while asserted is coalesced'));
  setLine(words, 6, SOURCE_RESAMPLE, true);
  t.false(apic.deliver(c), 'a single interrupt');
  t.deepEqual(c.log, [6]);
  t.is(Atomics.load(words, 2), 1 << 6, 'the EOI is flagged for the main thread');
  t.true(setLine(words, 6, SOURCE_RESAMPLE, true), 'the resampler lowered its level at the EOI: the next raise is an edge');
});

test('a GSI raised with interrupts enabled but no handler is a guest error naming the vector', (t) => {
  const state = newIrqchipState();
  const apic = new LocalApic(state);
  setLine(new Int32Array(state), 3, SOURCE_USER, true);
  t.throws(() => apic.deliver(cpu()), { message: /vector 3/ });
});

/** A stand-in VM: its shared buffer, vCPU handles that record signals, and a destruction flag. */
function fakeVm(state: SharedArrayBuffer, ids: number[]) {
  const signals: [number, number][] = [];
  const vcpus = new Map(ids.map((id) => [id, { id, signal: (bits: number) => signals.push([id, bits]) }]));
  const vm = { vcpus, destroying: false, sharedBuffer: () => state } as unknown as Vm;
  return { vm, signals };
}

test('Irqchip.setIrq wakes the first vCPU created, only on a rising edge, and not once the VM is going away', (t) => {
  const state = newIrqchipState();
  const { vm, signals } = fakeVm(state, [2, 0, 1]);
  const chip = new Irqchip(vm);
  chip.setIrq(5, SOURCE_USER, true);
  chip.setIrq(5, SOURCE_USER, true);
  chip.setIrq(5, SOURCE_USER, false);
  t.deepEqual(signals, [[2, ATTN_IRQ]]);
  t.is(new LocalApic(state).pending(2), 1 << 5);
  (vm as unknown as { destroying: boolean }).destroying = true;
  chip.setIrq(6, SOURCE_USER, true);
  t.is(signals.length, 1);
});

test('Irqchip.onAck hears the EOIs of resampled GSIs on the main thread', async (t) => {
  const state = newIrqchipState();
  const { vm } = fakeVm(state, [0]);
  const chip = new Irqchip(vm);
  chip.setResample(9, true);
  const acked = new Promise<number>((resolve) => chip.onAck(resolve));
  const c = cpu();
  handle(c, 9);
  chip.setIrq(9, SOURCE_RESAMPLE, true);
  new LocalApic(state).deliver(c);
  t.is(await acked, 1 << 9);
  chip.destroy();
});
