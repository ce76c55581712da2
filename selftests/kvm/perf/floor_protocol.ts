// The 32-byte messages of the transport floor (the same as transport_floor.c): byte 0 the command,
// bytes 8..15 a sequence number, bytes 16..23 the answer.

export const FLOOR_MSG = 32;
/** Answer with seq + 1. */
export const CMD_READ = 0;
/** Posted: no answer; seq must count up from 0 since the last fence. */
export const CMD_WRITE = 1;
/** Answer with the number of posted writes since the last fence. */
export const CMD_FENCE = 0xff;
/** Exit. */
export const CMD_QUIT = 0xfe;
