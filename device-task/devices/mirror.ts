// mirror: a stateless device whose every answer is a function of its request, so a test can check
// each response against the command that caused it (several vCPUs sharing one fd, reordering, a
// response delivered to the wrong vCPU), plus a counter that makes broken serialization visible.
//
//   read(offset, size, user_data) = ((user_data << 32) ^ offset ^ 0x5a5a5a5a5a5a5a5a), low `size` bytes
//   write                         = ignored
//   read at MIRROR_BACKLOG_OFFSET (0xfff8) with size 8 = the backlog count (other sizes there mirror)
//
// The backlog count: how many times the device, holding a command that needs an answer, found another
// command already queued on the same channel before it had answered. The serve loop observes this
// for the model (DeviceModel.observeBacklog): after reading a command it checks for bytes already read
// past that frame (stream/pipe) and does a non-blocking poll(2) (timeout 0) on the command fd. KVM
// sends at most one non-posted command per read fd at a time (docs/ioregionfd.md §5.3), so with non-posted
// accesses only the count stays 0. Posted writes need no answer and may legitimately pile up; a
// command that needs an answer and follows them counts too, so keep posted regions on other fds when
// checking serialization. The count is a lower bound: a second command sent just after the poll
// goes unseen.

import { sizeMask } from '../../proto/ioregionfd-wire';
import type { DeviceDefinition } from '../sdk/device-model';

/** XORed into every mirrored value, so that offset 0 / user_data 0 does not answer 0. */
export const MIRROR_PATTERN = 0x5a5a_5a5a_5a5a_5a5an;
/** A size-8 read here returns the backlog count instead of mirroring. */
export const MIRROR_BACKLOG_OFFSET = 0xfff8n;

const U64 = 0xffff_ffff_ffff_ffffn;

/** What the mirror device answers to a read (also for tests computing the expected value). */
export function mirrorValue(offset: bigint, size: number, userData: bigint): bigint {
  return ((userData << 32n) ^ offset ^ MIRROR_PATTERN) & sizeMask(size);
}

export const mirror: DeviceDefinition = {
  name: 'mirror',
  description: 'answers every read with a function of (user_data, offset, size); counts commands queued behind an unanswered one',
  regionSize: 0x10000,
  create() {
    let backlog = 0n;
    return {
      read: (offset, size, userData) => (offset === MIRROR_BACKLOG_OFFSET && size === 8 ? backlog : mirrorValue(offset, size, userData)),
      write: () => undefined,
      observeBacklog(queued) {
        if (queued) backlog = (backlog + 1n) & U64;
      },
      reset: () => {
        backlog = 0n;
      },
    };
  },
};
