"""H.235.6 protection of RTP (the media half of :mod:`gateway.h323.h2356`, kept here so that the
media plane uses it without knowing about H.323): AES-128-CBC over the payload, IV = header octets
2..7 repeated to 16, RFC 3550 padding when not whole blocks (P bit, the count in the last encrypted
octet), ciphertext stealing read but never sent, the synchFlag payload type on the wire.

:class:`H235MediaContext` has the interface of :class:`gateway.media.srtp.SrtpContext`."""
from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["H235MediaContext", "aes_block"]


def aes_block(key: bytes, block: bytes, decrypt: bool = False) -> bytes:
    c = Cipher(algorithms.AES(key), modes.ECB())
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(block) + op.finalize()



# --------------------------------------------------------------------------- media

def _header_len(packet: bytes) -> int | None:
    if len(packet) < 12 or packet[0] >> 6 != 2:
        return None
    n = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if len(packet) < n + 4:
            return None
        n += 4 + 4 * int.from_bytes(packet[n + 2:n + 4], "big")
    return n if n <= len(packet) else None


def _iv(packet: bytes) -> bytes:
    s = packet[2:8]
    return (s * 3)[:16]


def _cbc(key: bytes, iv: bytes, data: bytes, decrypt: bool) -> bytes:
    c = Cipher(algorithms.AES(key), modes.CBC(iv))
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(data) + op.finalize()


def _cts_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """CBC with ciphertext stealing (the last two blocks swapped), as H323Plus decodes it."""
    d = len(data) % 16
    head = data[:len(data) - d - 16]               # C_1 .. C_{n-2}
    c_last_full = data[len(data) - d - 16:len(data) - d]   # E((P_n||0) xor C'_{n-1})
    c_tail = data[len(data) - d:]                  # first d octets of C'_{n-1}
    prev = head[-16:] if head else iv
    plain_head = _cbc(key, iv, head, True) if head else b""
    x = aes_block(key, c_last_full, decrypt=True)             # (P_n||0) xor C'_{n-1}
    c_prev = c_tail + x[d:]                                    # C'_{n-1} rebuilt
    p_n = bytes(a ^ b for a, b in zip(x[:d], c_prev[:d]))
    p_prev = bytes(a ^ b for a, b in zip(aes_block(key, c_prev, decrypt=True), prev))
    return plain_head + p_prev + p_n


@dataclass
class _Direction:
    key: bytes
    cipher_pt: int
    plain_pt: int


class H235MediaContext:
    """One RTP session's H.235.6 protection: ``tx`` (key, cipher PT, plain PT) encrypts what we
    send, ``rx`` decrypts what we receive; a direction that is None passes packets unchanged.
    RTCP is never encrypted. A packet that cannot be decrypted is counted and dropped (None)."""

    suite = "H.235.6 AES-128"

    def __init__(self, tx: tuple[bytes, int, int] | None, rx: tuple[bytes, int, int] | None) -> None:
        self.tx = _Direction(*tx) if tx is not None else None
        self.rx = _Direction(*rx) if rx is not None else None
        self.failures = 0

    def protect(self, packet: bytes) -> bytes:
        d = self.tx
        n = _header_len(packet)
        if d is None or n is None or (packet[1] & 0x7F) != d.plain_pt:
            return packet            # only the channel's own media is encrypted (H.235.6 keys one PT)
        header = bytearray(packet[:n])
        payload = packet[n:]
        if header[0] & 0x20:                         # our own padding: not expected from the stack
            count = payload[-1] if payload else 0
            payload = payload[:-count] if 0 < count <= len(payload) else payload
            header[0] &= ~0x20 & 0xFF
        pad = (-len(payload)) % 16 if payload else 16
        if pad:
            payload = payload + bytes(pad - 1) + bytes([pad])
            header[0] |= 0x20
        header[1] = (header[1] & 0x80) | (d.cipher_pt & 0x7F)
        return bytes(header) + _cbc(d.key, _iv(packet), payload, False)

    def unprotect(self, packet: bytes) -> bytes | None:
        d = self.rx
        n = _header_len(packet)
        if d is None:
            return packet
        if n is None or (packet[1] & 0x7F) != d.cipher_pt:
            self.failures += 1
            return None
        header = bytearray(packet[:n])
        payload = packet[n:]
        try:
            if header[0] & 0x20:
                if not payload or len(payload) % 16:
                    raise ValueError("padded payload is not whole blocks")
                clear = _cbc(d.key, _iv(packet), payload, True)
                count = clear[-1]
                if not 1 <= count <= min(16, len(clear)):
                    raise ValueError("bad padding count")
                clear = clear[:-count]
                header[0] &= ~0x20 & 0xFF
            elif len(payload) % 16 == 0:
                clear = _cbc(d.key, _iv(packet), payload, True) if payload else b""
            elif len(payload) > 16:
                clear = _cts_decrypt(d.key, _iv(packet), payload)
            else:
                raise ValueError("short unpadded payload")
        except ValueError:
            self.failures += 1
            return None
        header[1] = (header[1] & 0x80) | (d.plain_pt & 0x7F)
        return bytes(header) + clear

    def protect_rtcp(self, packet: bytes) -> bytes:
        return packet

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        return packet
