"""H.235.6 media encryption: DH tokens, session keys in H.245, AES-128-CBC RTP — each checked
against values written out here from the recommendation's rules (as H323Plus applies them), not
against the gateway's own helpers alone."""
from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.h323 import h2356
from tests.test_h323_h245 import Wire, rx, tx

AES128 = (2, 16, 840, 1, 101, 3, 4, 1, 2)


def test_the_group_is_rfc2409_oakley_2_and_the_key_is_the_low_128_bits_of_the_secret():
    # RFC 2409 §6.2: p = 2^1024 - 2^960 - 1 + 2^64 * { [2^894 pi] + 129093 }, pi by Machin's formula
    assert h2356.DH1024_P == 2 ** 1024 - 2 ** 960 - 1 + 2 ** 64 * (_floor_pi_times_2_to(894) + 129093)
    assert h2356.DH1024_G == 2
    a, b = h2356.KeyAgreement(), h2356.KeyAgreement()
    shared = pow(b.halfkey, a._x, h2356.DH1024_P)
    expected = (shared % 2 ** 128).to_bytes(16, "big")
    assert a.master_key(b.halfkey) == b.master_key(a.halfkey) == expected
    for bad in (0, 1, h2356.DH1024_P - 1, h2356.DH1024_P):
        with pytest.raises(ValueError):
            a.master_key(bad)


def _floor_pi_times_2_to(bits: int) -> int:
    guard = 64
    one = 1 << (bits + guard)

    def arctan_inv(x: int) -> int:
        total, term, k, sign = 0, one // x, 1, 1
        while term:
            total += sign * (term // k)
            term //= x * x
            k += 2
            sign = -sign
        return total

    return (16 * arctan_inv(5) - 4 * arctan_inv(239)) >> guard


def test_setup_tokens_are_the_dh_1024_token_and_the_v3_marker_and_read_back():
    ka = h2356.KeyAgreement()
    tokens = ka.tokens()
    assert [t["tokenOID"] for t in tokens] == [(0, 0, 8, 235, 0, 3, 43), (0, 0, 8, 235, 0, 3, 24)]
    dhkey = tokens[0]["dhkey"]
    assert dhkey["halfkey"] == (ka.halfkey, 1024) and dhkey["modSize"] == (h2356.DH1024_P, 1024)
    assert dhkey["generator"] == (2, 1024)              # padded to the prime's length (H323Plus)
    # through real PER in a Setup-UUIE, as tshark and a room system see it
    body = _setup_with(tokens)["h323-uu-pdu"]["h323-message-body"][1]
    assert h2356.read_dh_tokens(body["tokens"]) == ka.halfkey
    assert h2356.read_dh_tokens([{"tokenOID": (0, 0, 8, 235, 0, 3, 24)}]) is None
    other = [{"tokenOID": (0, 0, 8, 235, 0, 3, 43), "dhkey": {"halfkey": (5, 1024), "modSize": (23, 1024),
                                                              "generator": (2, 1024)}}]
    assert h2356.read_dh_tokens(other) is None          # not the standard prime: not taken


def _setup_with(tokens):
    from gateway.h323 import q931

    msg = q931.build_setup(1, os.urandom(16), os.urandom(16), [("h323-ID", "a")], [("dialledDigits", "1000")],
                           ("127.0.0.1", 1720), ("127.0.0.1", 1721), None, True, tokens=tokens)
    return q931.decode(msg.encode()).user_user     # through the bytes


def test_the_session_key_goes_as_an_h235key_encrypted_under_the_dh_key():
    master, key = os.urandom(16), os.urandom(16)
    data = h2356.encode_session_key(master, key)
    enc = Cipher(algorithms.AES(master), modes.CBC(bytes(16))).encryptor()
    wrapped = enc.update(key) + enc.finalize()
    # H235Key.secureSharedSecret {algorithmOID AES-128, paramS {}, encryptedSessionKey}, aligned PER
    assert data == bytes.fromhex("801d3009608648016503040102" "0010") + wrapped
    assert h2356.decode_session_key(master, data) == key
    for broken in (data[:-3], b"\x00" + data[1:], b"\xff" * 20):
        with pytest.raises(ValueError):
            h2356.decode_session_key(master, broken)


def _rtp(pt: int, payload: bytes, seq: int = 0x1234, ts: int = 0x01020304) -> bytes:
    return bytes([0x80, pt]) + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + b"\x11\x22\x33\x44" + payload


def test_rtp_payloads_are_aes_cbc_with_the_header_iv_and_padding_when_not_whole_blocks():
    key = os.urandom(16)
    ctx = h2356.H235MediaContext((key, 120, 0), (key, 120, 0))
    payload = bytes(range(160))                          # 20 ms of G.711: ten whole blocks
    out = ctx.protect(_rtp(0, payload))
    iv = bytes.fromhex("123401020304" "123401020304" "12340102")
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    assert out[:2] == bytes([0x80, 120]) and out[2:12] == _rtp(0, b"")[2:12]   # header clear, PT 120
    assert out[12:] == enc.update(payload) + enc.finalize()
    assert ctx.unprotect(out) == _rtp(0, payload)
    odd = bytes(range(30))                               # not whole blocks: padded, P bit set
    out = ctx.protect(_rtp(0, odd))
    assert out[0] & 0x20 and len(out) == 12 + 32
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    clear = dec.update(out[12:]) + dec.finalize()
    assert clear[:30] == odd and clear[-1] == 2
    assert ctx.unprotect(out) == _rtp(0, odd)
    # what H323Plus can also receive: ciphertext stealing (P=0, not whole blocks)
    plain = os.urandom(37)
    assert ctx.unprotect(_cts(key, _rtp(120, b""), plain)) == _rtp(0, plain)
    # a wrong payload type or a broken padded packet is dropped and counted
    assert ctx.unprotect(_rtp(0, payload)) is None
    assert ctx.unprotect(bytes([0xA0, 120]) + out[2:12] + os.urandom(17)) is None   # P set, not whole blocks
    assert ctx.failures == 2
    assert ctx.protect_rtcp(b"\x80\xc8rtcp") == b"\x80\xc8rtcp"     # RTCP stays clear


def _cts(key: bytes, header: bytes, plain: bytes) -> bytes:
    """CBC ciphertext stealing written out: C1..C(n-2), E((Pn||0) xor C'(n-1)), C'(n-1)[:d]."""
    iv = (header[2:8] * 3)[:16]
    d = len(plain) % 16
    full = plain[:len(plain) - d]
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    c = enc.update(full) + enc.finalize()
    last = c[-16:]
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    block = ecb.update(bytes(a ^ b for a, b in zip(plain[-d:] + bytes(16 - d), last))) + ecb.finalize()
    return header + c[:-16] + block + last[:d]


def _encrypted_wire(**kw) -> Wire:
    w = Wire(**kw)
    key = os.urandom(16)
    for s in (w.a, w.b):
        s.offer_encryption, s.media_key = True, key
    w.connect()
    return w


def test_h245_declares_aes_and_opens_h235media_channels_with_keys_from_the_master():
    w = _encrypted_wire()
    assert w.a.remote_encryption and w.b.remote_encryption and w.a.encrypting
    tcs = w.messages("b", "terminalCapabilitySet")[0]
    sec = [e for e in tcs["capabilityTable"] if e["capability"][0] == "h235SecurityCapability"]
    media = {e["capabilityTableEntryNumber"] for e in tcs["capabilityTable"]
             if e["capability"][0] in ("receiveAudioCapability", "receiveVideoCapability")}
    assert {e["capability"][1]["mediaCapability"] for e in sec} == media
    assert all(e["capabilityTableEntryNumber"] == 100 + e["capability"][1]["mediaCapability"] for e in sec)
    assert sec[0]["capability"][1]["encryptionAuthenticationAndIntegrity"] == \
        {"encryptionCapability": [("algorithm", AES128)]}
    alt = tcs["capabilityDescriptors"][0]["simultaneousCapabilities"][0]
    assert all(n + 100 in alt for n in alt if n in media)
    for side in ("a", "b"):
        w.session(side).open_channel("audio", codec_name="PCMU", local_rtcp=("10.0.0.1", 5001))
    w.pump()
    master = w.a if w.a.master else w.b
    slave = w.b if master is w.a else w.a
    m_tx, s_tx = tx(master, "audio"), tx(slave, "audio")
    for ch in (m_tx, s_tx, rx(master, "audio"), rx(slave, "audio")):
        assert ch.encrypted and ch.cipher_pt == 120 and ch.payload_type == 0 and len(ch.session_key) == 16
    assert m_tx.session_key == rx(slave, "audio").session_key     # in the master's OLC
    assert s_tx.session_key == rx(master, "audio").session_key    # in the master's OLCAck
    assert m_tx.session_key != s_tx.session_key
    to_slave = "b" if slave is w.b else "a"
    olc = w.messages(to_slave, "openLogicalChannel")[0]
    dt = olc["forwardLogicalChannelParameters"]["dataType"]
    assert dt[0] == "h235Media" and dt[1]["mediaType"] == ("audioData", ("g711Ulaw64k", 20))
    assert olc["encryptionSync"]["synchFlag"] == 120
    assert h2356.decode_session_key(master.media_key, olc["encryptionSync"]["h235Key"]) == m_tx.session_key
    ack = w.messages(to_slave, "openLogicalChannelAck")[0]
    assert "encryptionSync" in ack
    assert "encryptionSync" not in w.messages("a" if to_slave == "b" else "b", "openLogicalChannel")[0]


def test_a_far_end_without_h235_gets_plain_channels_and_an_encrypted_one_is_refused_without_a_key():
    w = Wire()
    w.a.offer_encryption, w.a.media_key = True, os.urandom(16)
    w.connect()
    assert not w.a.encrypting                              # b declared no H.235 capability
    w.a.open_channel("audio", codec_name="PCMU", local_rtcp=("10.0.0.1", 5001))
    w.pump()
    assert not rx(w.b, "audio").encrypted
    w.a.remote_encryption = True                           # force an h235Media OLC at b, who has no key
    w.a.open_channel("audio", codec_name="G722", local_rtcp=("10.0.0.1", 5001))
    w.pump()
    rej = w.messages("a", "openLogicalChannelReject")
    assert rej and rej[-1]["cause"][0] == "dataTypeNotSupported"
