// The mirror device: each read answers a function of (user_data, offset, size); writes are ignored;
// observed backlogs are counted and read back at 0xfff8.

import test from 'ava';
import { fakeDeviceContext } from '../sdk/conformance';
import { mirror, MIRROR_BACKLOG_OFFSET, mirrorValue } from './mirror';

const dev = () => mirror.create(fakeDeviceContext().ctx);

test('reads answer ((user_data << 32) ^ offset ^ 0x5a5a5a5a5a5a5a5a) truncated to the size', (t) => {
  const d = dev();
  t.is(d.read(0x10n, 8, 0x3n), 0x5a5a5a595a5a5a4an);
  t.is(d.read(0x10n, 4, 0x3n), 0x5a5a5a4an);
  t.is(d.read(0x10n, 2, 0x3n), 0x5a4an);
  t.is(d.read(0x10n, 1, 0x3n), 0x4an);
  t.is(d.read(0n, 8, 0xffff_ffff_ffff_ffffn), 0xa5a5a5a55a5a5a5an, 'user_data bits shifted past 64 are dropped');
  t.is(mirrorValue(0x10n, 8, 3n), 0x5a5a5a595a5a5a4an);
});

test('writes change nothing', (t) => {
  const d = dev();
  d.write(0x10n, 8, 0n, 0x3n);
  t.is(d.read(0x10n, 8, 0x3n), mirrorValue(0x10n, 8, 3n));
});

test('the backlog count reads at 0xfff8 with size 8; other sizes there mirror', (t) => {
  const d = dev();
  t.is(d.read(MIRROR_BACKLOG_OFFSET, 8, 0n), 0n);
  d.observeBacklog!(false);
  d.observeBacklog!(true);
  d.observeBacklog!(true);
  t.is(d.read(MIRROR_BACKLOG_OFFSET, 8, 0n), 2n);
  t.is(d.read(MIRROR_BACKLOG_OFFSET, 4, 0n), mirrorValue(MIRROR_BACKLOG_OFFSET, 4, 0n));
  d.reset();
  t.is(d.read(MIRROR_BACKLOG_OFFSET, 8, 0n), 0n, 'reset clears the count');
});
