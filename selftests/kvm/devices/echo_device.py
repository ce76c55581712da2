#!/usr/bin/env python3
"""echo_device.py: an ioregionfd device task written against the documented fd contract only.

It shares no code with the TypeScript device tasks: what it knows comes from the contract in
proto/device-task-manifest.ts and the wire layouts of the RFC (docs/ioregionfd.md section 4).

* The manifest is JSON in the environment variable IOREGIONFD_DEVICE_TASK; every fd it names is
  already open at that number. Each channel reads 32-byte commands from cmd_fd and writes 32-byte
  responses to resp_fd; transport "seqpacket" delivers one frame per read, "stream" and "pipe" may
  split or coalesce frames. "layout" is "v3" (default) or "v1".
* Semantics: the kvm-unit-tests testdev echo. One 64-bit value shared by all regions: a write of n
  bytes replaces its low n bytes, a read of n bytes returns its low n bytes; offsets are ignored.
* A response (data u64 + 24 zero bytes, little-endian) is written only when the command's resp bit
  is set: always for reads, for writes unless the region has posted writes. Writes answer 0.
* Exit 0 when every channel has reached EOF (or the lifeline fd closes); 2 for a manifest it cannot
  use; 3 after a protocol violation (a frame that is not 32 bytes, an unknown cmd), with a log line.

Python 3 standard library only.
"""

import json
import os
import select
import struct
import sys

MANIFEST_ENV = "IOREGIONFD_DEVICE_TASK"
MSG_SIZE = 32
CMD_READ, CMD_WRITE = 0, 1
EXIT_OK, EXIT_BAD_MANIFEST, EXIT_PROTOCOL = 0, 2, 3

# RFC v3, byte 1 of the command: size_exponent in bits 3..0, resp in bit 4 (SysV bit-field order).
V3_SIZE_MASK, V3_RESP_BIT = 0x0F, 0x10
# v1/v2 info word (u32 at 0): cmd in bits 3..0, size code in bits 5..4, resp in bit 6.
V1_CMD_MASK, V1_SIZE_SHIFT, V1_RESP_BIT = 0x0F, 4, 0x40

U64 = (1 << 64) - 1


def log(message):
    sys.stderr.write("echo_device[%d]: %s\n" % (os.getpid(), message))
    sys.stderr.flush()


class ProtocolViolation(Exception):
    pass


def decode(layout, frame):
    """(cmd, size in bytes, resp, user_data, offset, data) of one 32-byte command."""
    if layout == "v3":
        cmd, bits = frame[0], frame[1]
        size_code, resp = bits & V3_SIZE_MASK, bool(bits & V3_RESP_BIT)
    else:
        (info,) = struct.unpack_from("<I", frame, 0)
        cmd, size_code, resp = info & V1_CMD_MASK, (info >> V1_SIZE_SHIFT) & 3, bool(info & V1_RESP_BIT)
    if cmd not in (CMD_READ, CMD_WRITE):
        raise ProtocolViolation("unknown cmd %d" % cmd)
    if size_code > 3:
        raise ProtocolViolation("invalid size exponent %d" % size_code)
    user_data, offset, data = struct.unpack_from("<QQQ", frame, 8)
    return cmd, 1 << size_code, resp, user_data, offset, data


class Echo:
    """The testdev echo: one 64-bit value."""

    def __init__(self):
        self.value = 0

    def access(self, cmd, size, data):
        mask = (1 << (8 * size)) - 1
        if cmd == CMD_READ:
            return self.value & mask
        self.value = (self.value & ~mask & U64) | (data & mask)
        return 0


class Channel:
    def __init__(self, index, spec):
        self.index = index
        self.cmd_fd = spec["cmd_fd"]
        self.resp_fd = spec["resp_fd"]
        self.transport = spec["transport"]
        self.pending = b""
        self.open = True

    def close(self):
        self.open = False
        for fd in {self.cmd_fd, self.resp_fd}:
            try:
                os.close(fd)
            except OSError:
                pass


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def serve_frames(channel, frames, layout, echo):
    """Handle whole frames; returns False if the peer went away while we answered."""
    for at in range(0, len(frames), MSG_SIZE):
        cmd, size, resp, _user_data, _offset, data = decode(layout, frames[at:at + MSG_SIZE])
        if cmd == CMD_READ and not resp:
            raise ProtocolViolation("READ without the resp bit")
        value = echo.access(cmd, size, data)
        if resp:
            try:
                write_all(channel.resp_fd, struct.pack("<Q", value) + bytes(MSG_SIZE - 8))
            except (BrokenPipeError, ConnectionResetError):
                return False
    return True


def pump(channel, layout, echo):
    """One read from a channel; returns False at EOF."""
    try:
        chunk = os.read(channel.cmd_fd, 2 * MSG_SIZE if channel.transport == "seqpacket" else 64 * MSG_SIZE)
    except ConnectionResetError:
        return False
    if not chunk:
        if channel.pending:
            raise ProtocolViolation("EOF inside a frame (%d of %d bytes)" % (len(channel.pending), MSG_SIZE))
        return False
    if channel.transport == "seqpacket":
        if len(chunk) != MSG_SIZE:
            raise ProtocolViolation("a %d-byte message where a %d-byte command belongs" % (len(chunk), MSG_SIZE))
        return serve_frames(channel, chunk, layout, echo)
    data = channel.pending + chunk
    whole = len(data) - len(data) % MSG_SIZE
    channel.pending = data[whole:]
    return serve_frames(channel, data[:whole], layout, echo)


def parse_manifest():
    try:
        manifest = json.loads(os.environ.get(MANIFEST_ENV, ""))
    except ValueError as e:
        raise ValueError("manifest: not JSON: %s" % e)
    if not isinstance(manifest, dict) or manifest.get("version") != 1:
        raise ValueError("manifest: version must be 1")
    layout = manifest.get("layout", "v3")
    if layout not in ("v3", "v1"):
        raise ValueError("manifest: layout must be \"v3\" or \"v1\", got %r" % (layout,))
    channels = manifest.get("channels", [])
    if not isinstance(channels, list):
        raise ValueError("manifest: channels must be a list")
    for i, c in enumerate(channels):
        if not isinstance(c, dict) or c.get("transport") not in ("seqpacket", "stream", "pipe"):
            raise ValueError("manifest: channels[%d].transport is missing or unknown" % i)
        for key in ("cmd_fd", "resp_fd"):
            if not isinstance(c.get(key), int) or isinstance(c.get(key), bool) or c[key] < 0:
                raise ValueError("manifest: channels[%d].%s must be an fd number" % (i, key))
    lifeline = manifest.get("lifeline_fd")
    if lifeline is not None and (not isinstance(lifeline, int) or lifeline < 0):
        raise ValueError("manifest: lifeline_fd must be an fd number")
    return layout, [Channel(i, c) for i, c in enumerate(channels)], lifeline


def main():
    try:
        layout, channels, lifeline = parse_manifest()
    except ValueError as e:
        log(str(e))
        return EXIT_BAD_MANIFEST
    echo = Echo()
    poller = select.poll()
    by_fd = {}
    for ch in channels:
        poller.register(ch.cmd_fd, select.POLLIN)
        by_fd[ch.cmd_fd] = ch
    if lifeline is not None:
        poller.register(lifeline, select.POLLIN)
    current = None
    try:
        while any(ch.open for ch in channels) or (not channels and lifeline is not None):
            for fd, events in poller.poll():
                if fd == lifeline:
                    if not os.read(lifeline, 1):
                        return EXIT_OK
                    continue
                current = by_fd[fd]
                if events & select.POLLNVAL or not pump(current, layout, echo):
                    poller.unregister(fd)
                    current.close()
        return EXIT_OK
    except ProtocolViolation as e:
        log("protocol violation on channel %d: %s; closing" % (current.index, e))
        for ch in channels:
            ch.close()
        return EXIT_PROTOCOL


if __name__ == "__main__":
    sys.exit(main())
