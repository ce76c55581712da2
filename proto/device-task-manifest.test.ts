// The device-task manifest: what encodeManifest writes parseManifest reads back, defaults apply, and
// every malformed field is rejected with an error that names it.

import test from 'ava';
import { DeviceTaskManifest, encodeManifest, MANIFEST_VERSION, parseManifest } from './device-task-manifest';

const full: DeviceTaskManifest = {
  version: MANIFEST_VERSION,
  device: 'regfile',
  config: { mailbox: '0x100', nested: { a: [1, 2] } },
  layout: 'v1',
  channels: [
    { cmd_fd: 3, resp_fd: 3, transport: 'seqpacket' },
    { cmd_fd: 4, resp_fd: 4, transport: 'stream' },
    { cmd_fd: 5, resp_fd: 6, transport: 'pipe' },
  ],
  memory: [
    { fd: 7, gpa: 0n, size: 0x40_0000n, offset: 0n },
    { fd: 8, gpa: 0xffff_ffff_ffff_f000n, size: 0x1000n, offset: 0x1234_5678_9abc_d000n },
  ],
  eventfds: { doorbell: 9, irq: 10 },
  lifeline_fd: 11,
  poll_ns: 20_000,
};

test('encodeManifest then parseManifest gives the same manifest, u64s intact', (t) => {
  t.deepEqual(parseManifest(encodeManifest(full)), full);
});

test('64-bit numbers travel as hex strings, not JSON numbers that would lose precision', (t) => {
  const raw = JSON.parse(encodeManifest(full));
  t.is(raw.memory[1].gpa, '0xfffffffffffff000');
  t.is(raw.memory[1].offset, '0x123456789abcd000');
});

test('only version and device are required: layout v3, no channels, memory or eventfds, no lifeline, default polling', (t) => {
  t.deepEqual(parseManifest('{"version":1,"device":"testdev"}'), {
    version: 1, device: 'testdev', config: {}, layout: 'v3', channels: [], memory: [], eventfds: {}, lifeline_fd: undefined, poll_ns: undefined,
  });
});

/** The full manifest as JSON with one field replaced (path of keys/indexes). */
function withField(path: (string | number)[], value: unknown): string {
  const raw = JSON.parse(encodeManifest(full));
  let o = raw;
  for (const k of path.slice(0, -1)) o = o[k];
  o[path[path.length - 1]] = value;
  return JSON.stringify(raw);
}

const badFields: [string, (string | number)[], unknown][] = [
  ['version', ['version'], 2],
  ['version', ['version'], '1'],
  ['device', ['device'], 7],
  ['layout', ['layout'], 'v2'],
  ['channels[1].transport', ['channels', 1, 'transport'], 'carrier-pigeon'],
  ['channels[0].cmd_fd', ['channels', 0, 'cmd_fd'], -1],
  ['channels[0].cmd_fd', ['channels', 0, 'cmd_fd'], '3'],
  ['channels[2].resp_fd', ['channels', 2, 'resp_fd'], 6.5],
  ['memory[0].fd', ['memory', 0, 'fd'], null],
  ['memory[1].gpa', ['memory', 1, 'gpa'], 4096],
  ['memory[0].size', ['memory', 0, 'size'], '4096'],
  ['memory[1].offset', ['memory', 1, 'offset'], '0xzz'],
  ['eventfds.irq', ['eventfds', 'irq'], 'ten'],
  ['lifeline_fd', ['lifeline_fd'], -2],
  ['poll_ns', ['poll_ns'], -1],
  ['poll_ns', ['poll_ns'], 1.5],
  ['poll_ns', ['poll_ns'], '50000'],
];

for (const [name, path, value] of badFields) {
  test(`a bad ${name} (${JSON.stringify(value)}) is rejected naming ${name}`, (t) => {
    const e = t.throws(() => parseManifest(withField(path, value)));
    t.true(e?.message.startsWith('manifest: '), e?.message);
    t.true(e?.message.includes(name), e?.message);
  });
}

test('text that is not JSON is rejected as such', (t) => {
  t.throws(() => parseManifest(''), { message: /^manifest: not JSON/ });
  t.throws(() => parseManifest('{"version":1,'), { message: /^manifest: not JSON/ });
});

// A manifest of the wrong shape is rejected with an error naming the field, never a bare TypeError.
const badShapes: [string, string, string][] = [
  ['a manifest that is JSON null', 'null', 'manifest'],
  ['channels as an object', withField(['channels'], { cmd_fd: 3 }), 'channels'],
  ['a null channels[0]', withField(['channels', 0], null), 'channels[0]'],
  ['memory as a string', withField(['memory'], 'all of it'), 'memory'],
  ['config as a string', withField(['config'], 'fast'), 'config'],
  ['eventfds as an array', withField(['eventfds'], [3, 4]), 'eventfds'],
  ['a memory[0].size above 2^64-1', withField(['memory', 0, 'size'], '0x10000000000000000'), 'memory[0].size'],
];
for (const [what, text, name] of badShapes) {
  test(`${what} is rejected naming ${name}`, (t) => {
    const e = t.throws(() => parseManifest(text));
    t.true(e?.message.startsWith('manifest: ') && e.message.includes(name), e?.message);
  });
}
