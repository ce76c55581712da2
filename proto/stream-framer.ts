// Cuts a SOCK_STREAM byte stream, whose chunks arrive split or coalesced at arbitrary points, back into
// fixed-size frames (32-byte ioregionfd messages by default).

import { IOREGIONFD_MSG_SIZE } from './ioregionfd-wire';

/**
 * Called once per complete frame, in stream order. The frame is view[off..off+frameSize). The
 * view is only valid during the call: it aliases either the caller's chunk or the framer's
 * reassembly buffer, which the next push overwrites. Decode (or copy) before returning.
 */
export type FrameHandler = (view: DataView, off: number) => void;

/**
 * Reassembles fixed-size frames from stream chunks. Whole frames inside a chunk are handed out
 * zero-copy (a view over the chunk's own buffer, honouring its byteOffset); only a frame split
 * across chunks is copied, into one frame-sized buffer, so at most one partial frame is held.
 * If onFrame throws, the exception propagates and the rest of that chunk is dropped: the stream is
 * out of step from then on and the connection should be treated as broken.
 */
export class StreamFramer {
  private readonly onFrame: FrameHandler;
  private readonly frameSize: number;
  private readonly partial: Uint8Array;
  private readonly partialView: DataView;
  private partialLen = 0;
  private delivering = false;

  constructor(onFrame: FrameHandler, frameSize = IOREGIONFD_MSG_SIZE) {
    if (!Number.isInteger(frameSize) || frameSize <= 0) throw new RangeError(`frame size must be a positive integer, got ${frameSize}`);
    this.onFrame = onFrame;
    this.frameSize = frameSize;
    this.partial = new Uint8Array(frameSize);
    this.partialView = new DataView(this.partial.buffer, this.partial.byteOffset, frameSize);
  }

  /** Bytes of an incomplete frame currently held (always less than the frame size). */
  get pending(): number {
    return this.partialLen;
  }

  /** Feed the next chunk of the stream; calls onFrame for every frame it completes. */
  push(chunk: Uint8Array): void {
    // A push from inside onFrame would overwrite the reassembly buffer the handler is reading.
    if (this.delivering) throw new Error('StreamFramer.push called from inside onFrame');
    const frameSize = this.frameSize;
    const len = chunk.byteLength;
    let pos = 0;
    this.delivering = true;
    try {
      if (this.partialLen > 0) {
        const take = Math.min(frameSize - this.partialLen, len);
        this.partial.set(chunk.subarray(0, take), this.partialLen);
        this.partialLen += take;
        pos = take;
        if (this.partialLen < frameSize) return;
        // Reset before the call so the framer is consistent even if the handler throws.
        this.partialLen = 0;
        this.onFrame(this.partialView, 0);
      }
      if (len - pos >= frameSize) {
        const view = new DataView(chunk.buffer, chunk.byteOffset, len);
        for (; len - pos >= frameSize; pos += frameSize) this.onFrame(view, pos);
      }
      if (pos < len) {
        this.partial.set(chunk.subarray(pos), 0);
        this.partialLen = len - pos;
      }
    } finally {
      this.delivering = false;
    }
  }
}
