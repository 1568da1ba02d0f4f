"""RFC 1006 TPKT framing, as H.225.0 call signalling and H.245 use it on TCP.

A TPKT is ``03 00 LL LL`` followed by ``LLLL - 4`` bytes of payload: version 3,
a reserved octet (0), and a 16-bit big-endian length that *includes* the
4-byte header (RFC 1006 §6).  :class:`TpktFramer` reassembles payloads from a
TCP byte stream, whatever way the stream was split or coalesced.

    >>> f = TpktFramer()
    >>> f.feed(tpkt_frame(b"abc")[:3]) + f.feed(tpkt_frame(b"abc")[3:])
    [b'abc']
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["TPKT_HEADER_LEN", "TPKT_MAX", "TPKT_VERSION", "TpktError", "TpktFramer", "tpkt_frame"]

TPKT_VERSION = 3
TPKT_HEADER_LEN = 4
TPKT_MAX = 65535  # the length field is 16 bits, header included


@dataclass(frozen=True)
class TpktError:
    """A framing error: the stream cannot be trusted any more, the caller closes it.

    Returned (not raised) by :meth:`TpktFramer.feed` after the good payloads
    that preceded it.
    """

    reason: str
    header: bytes = b""

    def __str__(self) -> str:
        return f"TPKT error: {self.reason}"


def tpkt_frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in a TPKT header.  ``ValueError`` if it cannot fit."""
    n = len(payload) + TPKT_HEADER_LEN
    if n > TPKT_MAX:
        raise ValueError(f"TPKT payload of {len(payload)} bytes is larger than {TPKT_MAX - TPKT_HEADER_LEN}")
    return struct.pack("!BBH", TPKT_VERSION, 0, n) + bytes(payload)


class TpktFramer:
    """Reassembles TPKT payloads from TCP segments.

    ``max_size`` bounds a packet (header included); a larger length, a version
    other than 3 or a length below 4 yields a :class:`TpktError`, after which
    the framer is *broken*: further input is ignored (each later call returns
    the same error) because the byte stream has lost its framing.
    A zero-payload TPKT (length 4, used as a keep-alive by some stacks) is
    skipped silently.
    """

    def __init__(self, max_size: int = TPKT_MAX) -> None:
        if not TPKT_HEADER_LEN < max_size <= TPKT_MAX:
            raise ValueError(f"max_size must be in {TPKT_HEADER_LEN + 1}..{TPKT_MAX}")
        self.max_size = max_size
        self._buf = bytearray()
        self.error: TpktError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete packet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | TpktError]:
        if self.error is not None:
            return [self.error]
        self._buf += data
        out: list[bytes | TpktError] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= TPKT_HEADER_LEN:
            version, _reserved, length = struct.unpack_from("!BBH", buf, pos)
            if version != TPKT_VERSION:
                self.error = TpktError(f"version {version}, expected {TPKT_VERSION}", bytes(buf[pos:pos + 4]))
            elif length < TPKT_HEADER_LEN:
                self.error = TpktError(f"length {length} is shorter than the header", bytes(buf[pos:pos + 4]))
            elif length > self.max_size:
                self.error = TpktError(f"length {length} is larger than the limit {self.max_size}",
                                       bytes(buf[pos:pos + 4]))
            if self.error is not None:
                out.append(self.error)
                self._buf = bytearray()
                return out
            if len(buf) - pos < length:
                break
            if length > TPKT_HEADER_LEN:
                out.append(bytes(buf[pos + TPKT_HEADER_LEN:pos + length]))
            pos += length
        if pos:
            del buf[:pos]
        return out
