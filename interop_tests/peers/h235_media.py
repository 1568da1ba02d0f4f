"""H.235.6 RTP encryption for the test peers, written from the recommendation as H323Plus applies
it (not imported from the gateway, so that the two implementations check each other):
AES-128-CBC over the payload, IV = RTP octets 2..7 repeated to 16, RFC 3550 padding (P bit, the
count in the last encrypted octet) when the payload is not a whole number of blocks, the
channel's synchFlag as the payload type of encrypted packets."""
from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def _cipher(key: bytes, packet: bytes) -> Cipher:
    seq_ts = packet[2:8]
    return Cipher(algorithms.AES(key), modes.CBC((seq_ts + seq_ts + seq_ts)[:16]))


def encrypt_rtp(packet: bytes, key: bytes, cipher_pt: int) -> bytes:
    """A plain RTP packet (12-octet header, no CSRC or extension, as the test peers send) made
    H.235.6."""
    first, second = packet[0], packet[1]
    payload = packet[12:]
    pad = 16 - len(payload) % 16
    if pad != 16:
        payload += bytes(pad - 1) + bytes([pad])
        first |= 0x20
    enc = _cipher(key, packet).encryptor()
    body = enc.update(payload) + enc.finalize()
    return bytes([first, (second & 0x80) | cipher_pt]) + packet[2:12] + body


def decrypt_rtp(packet: bytes, key: bytes, cipher_pt: int, plain_pt: int) -> bytes | None:
    """The plain packet of an H.235.6 one, None when it is not one of this channel's."""
    if len(packet) < 12 or packet[1] & 0x7F != cipher_pt:
        return None
    header = 12 + 4 * (packet[0] & 0x0F)
    body = packet[header:]
    if not body or len(body) % 16:
        return None
    dec = _cipher(key, packet).decryptor()
    clear = dec.update(body) + dec.finalize()
    first = packet[0]
    if first & 0x20:
        clear = clear[:-clear[-1]]
        first &= 0xDF
    return bytes([first, (packet[1] & 0x80) | plain_pt]) + packet[2:header] + clear
