"""ASN.1 wrapper (pycrate H.225.0 / H.245, aligned PER) and RFC 1006 TPKT framing."""
from __future__ import annotations

import threading

import pytest

from gateway.h323 import asn1
from gateway.h323.asn1 import Asn1Error
from gateway.h323.tpkt import TPKT_MAX, TpktError, TpktFramer, tpkt_frame

GUID = bytes(range(16))


def _drq(extensions: bool) -> tuple[str, dict]:
    body = {"requestSeqNum": 7, "endpointIdentifier": "EP1", "conferenceID": GUID, "callReferenceValue": 77,
            "disengageReason": ("normalDrop", 0)}
    if extensions:
        body["callIdentifier"] = {"guid": GUID}
        body["answeredCall"] = False
    return ("disengageRequest", body)


def test_ras_round_trip_and_known_encoding() -> None:
    value = ("unregistrationConfirm", {"requestSeqNum": 300})
    data = asn1.encode_ras(value)
    assert data == bytes([0x1C, 0x01, 0x2B])     # CHOICE index 7, ext 0; requestSeqNum-1 = 299 in 2 octets
    assert asn1.decode_ras(data) == value


def test_extension_additions_after_an_unaligned_root_are_encoded_per_x691() -> None:
    """pycrate 0.8.1 put an extra octet here (the root ends 3 bits into an octet); asn1.py fixes it."""
    data = asn1.encode_ras(_drq(True))
    # ... callReferenceValue 00 4d | choice 001, bitmap length 0001100 (13), bitmap 1000010000000, pad
    # then callIdentifier as an open type (length 17) and answeredCall (length 1).
    assert data.hex() == ("3e" "0006" "04" "004500500031" + GUID.hex() + "004d"
                          + "232100" + "11" + "00" + GUID.hex() + "01" + "00")
    assert asn1.decode_ras(data) == _drq(True)
    assert asn1.decode_ras(asn1.encode_ras(_drq(False))) == _drq(False)


def test_uuie_and_h245_round_trip() -> None:
    uu = {"h323-uu-pdu": {"h323-message-body": ("empty", 0), "h245Tunnelling": True,
                          "h245Control": [b"\x01\x02"]}}
    assert asn1.decode_uuie(asn1.encode_uuie(uu)) == uu
    rtd = ("request", ("roundTripDelayRequest", {"sequenceNumber": 5}))
    assert asn1.decode_h245(asn1.encode_h245(rtd)) == rtd
    msd = ("request", ("masterSlaveDetermination", {"terminalType": 190, "statusDeterminationNumber": 12345}))
    assert asn1.decode_h245(asn1.encode_h245(msd)) == msd


def test_decoded_values_are_detached_from_pycrate() -> None:
    a = asn1.decode_ras(asn1.encode_ras(_drq(True)))
    b = asn1.decode_ras(asn1.encode_ras(("unregistrationConfirm", {"requestSeqNum": 1})))
    assert a == _drq(True) and b[0] == "unregistrationConfirm"
    value = _drq(False)
    asn1.encode_ras(value)
    assert value == _drq(False)                  # the caller's value is not modified


@pytest.mark.parametrize("fn, data", [
    (asn1.decode_ras, b""),
    (asn1.decode_ras, b"\x3e\x00"),              # truncated PER
    (asn1.decode_ras, b"\xff" * 8),              # choice index beyond the root, garbage extension
    (asn1.decode_uuie, b"\x20\xb8\x06\x00"),
    (asn1.decode_h245, b"\x06"),
    (asn1.decode_h245, "not bytes"),
])
def test_malformed_pdus_raise_asn1_error(fn, data) -> None:
    with pytest.raises(Asn1Error) as info:
        fn(data)
    assert info.value.kind in ("decode", "size")


def test_trailing_bytes_are_refused_only_when_strict() -> None:
    data = asn1.encode_ras(("unregistrationConfirm", {"requestSeqNum": 1})) + b"\x00\x00"
    assert asn1.decode_ras(data)[0] == "unregistrationConfirm"
    with pytest.raises(Asn1Error, match="trailing"):
        asn1.decode_ras(data, strict=True)


@pytest.mark.parametrize("value", [
    ("unregistrationConfirm", {"requestSeqNum": 0}),                  # below 1..65535
    ("unregistrationConfirm", {}),                                     # mandatory component missing
    ("noSuchMessage", {}),
    ("gatekeeperRequest", "nonsense"),
])
def test_bad_values_raise_asn1_error(value) -> None:
    with pytest.raises(Asn1Error) as info:
        asn1.encode_ras(value)
    assert info.value.kind == "encode"


def test_protocol_identifiers() -> None:
    assert asn1.h225_version((0, 0, 8, 2250, 0, 4)) == 4
    assert asn1.h225_version((0, 0, 8, 2250, 0, 2)) == 2
    assert asn1.h245_version((0, 0, 8, 245, 0, 13)) == 13
    with pytest.raises(Asn1Error, match="protocolIdentifier"):
        asn1.h225_version((0, 0, 8, 245, 0, 7))
    with pytest.raises(Asn1Error):
        asn1.h245_version("0.0.8.245.0.7")


def test_alias_and_transport_helpers() -> None:
    assert asn1.alias_address(("dialedDigits", "5000")) == ("dialledDigits", "5000")
    assert asn1.alias_address(("h323-ID", "Điểm cầu")) == ("h323-ID", "Điểm cầu")
    assert asn1.parse_alias(asn1.alias_address(("transportID", "192.0.2.9:1720"))) == ("transportID",
                                                                                       "192.0.2.9:1720")
    assert asn1.parse_transport_address(asn1.transport_address("2001:db8::1", 1720)) == ("2001:db8::1", 1720)
    for bad in (("dialedDigits", "12a"), ("h323-ID", ""), ("x400", "a"), ("url-ID", "h323:ầ")):
        with pytest.raises(Asn1Error):
            asn1.alias_address(bad)
    with pytest.raises(Asn1Error):
        asn1.transport_address("192.0.2.300", 1)


def test_concurrent_use_from_threads() -> None:
    errors: list[BaseException] = []
    values = [("unregistrationConfirm", {"requestSeqNum": n}) for n in range(1, 201)]

    def work(offset: int) -> None:
        try:
            for v in values[offset::4]:
                assert asn1.decode_ras(asn1.encode_ras(v)) == v
                assert asn1.decode_ras(asn1.encode_ras(_drq(True))) == _drq(True)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# --------------------------------------------------------------------------- TPKT


def test_tpkt_frame_header() -> None:
    assert tpkt_frame(b"abc") == b"\x03\x00\x00\x07abc"
    with pytest.raises(ValueError):
        tpkt_frame(b"x" * TPKT_MAX)


def test_framer_split_and_coalesced_segments() -> None:
    stream = tpkt_frame(b"first") + tpkt_frame(b"") + tpkt_frame(b"second" * 100) + tpkt_frame(b"3")
    for cut in (1, 2, 3, 5, 7, 64, len(stream)):
        f = TpktFramer()
        got: list = []
        for i in range(0, len(stream), cut):
            got += f.feed(stream[i:i + cut])
        assert got == [b"first", b"second" * 100, b"3"], cut    # the empty keep-alive TPKT is skipped
        assert f.buffered == 0


@pytest.mark.parametrize("header, words", [
    (b"\x02\x00\x00\x08", "version 2"),
    (b"\x03\x00\x00\x03", "shorter than the header"),
    (b"\x03\x00\x10\x00", "larger than the limit"),
])
def test_framer_bad_header_is_an_error_after_the_good_packets(header: bytes, words: str) -> None:
    f = TpktFramer(max_size=2048)
    out = f.feed(tpkt_frame(b"ok") + header + b"rest")
    assert out[0] == b"ok"
    assert isinstance(out[1], TpktError) and words in out[1].reason
    assert f.feed(tpkt_frame(b"more")) == [out[1]]            # the stream stays broken: caller closes


def test_import_is_lazy_and_timed() -> None:
    asn1.h225_module()
    asn1.h245_module()
    times = asn1.import_seconds()
    assert "H225" in times
    assert times["H225"] < 5.0
