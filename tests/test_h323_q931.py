"""Q.931 / H.225.0 call signalling messages: wire format, builders, cause mapping, tshark decode.

``tshark_frames`` (also used by the RAS and capability tests) writes the
messages into a pcap on the standard ports (TCP 1720 with TPKT for call
signalling, UDP 1719 for RAS) and checks that Wireshark's dissectors decode
them without malformed packets or error-level expert info.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile

import pytest

from gateway.h323 import asn1, q931
from gateway.h323.q931 import IE, BearerCapability, Cause, MessageType, PartyNumber, Q931Error
from gateway.h323.tpkt import tpkt_frame

CONF = bytes(range(16))
CALL = bytes(range(16, 32))


# --------------------------------------------------------------------------- pcap + tshark helper


def _checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def write_pcap(path: str, packets: list[tuple[str, bytes]]) -> None:
    """``packets``: (``"cs"`` Q.931 message → TPKT over TCP to 1720 | ``"ras"`` → UDP to 1719
    | a port number → UDP to that port, bytes)."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet linktype
    seq = 1000
    for i, (kind, payload) in enumerate(packets):
        if kind == "cs":
            payload = tpkt_frame(payload)
            l4 = struct.pack("!HHIIBBHHH", 40000, 1720, seq, 1, 0x50, 0x18, 65535, 0, 0) + payload
            seq += len(payload)
            proto = 6
        elif kind == "ras" or isinstance(kind, int):
            dport = 1719 if kind == "ras" else int(kind)
            l4 = struct.pack("!HHHH", 40001, dport, 8 + len(payload), 0) + payload
            proto = 17
        else:
            raise ValueError(kind)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), i + 1, 0, 64, proto, 0,
                         bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]))
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + l4
        out += struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame
    with open(path, "wb") as f:
        f.write(out)


def tshark_frames(packets: list[tuple[str, bytes]]) -> list[str]:
    """Decode ``packets`` with tshark; assert none is malformed or has error expert info;
    return the ``-V`` text of each frame."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("tshark is not installed: install it (scripts/debian-test-packages.txt lists it, "
                    "scripts/install-test-deps.sh installs it); the H.323 wire-conformance tests need it")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "h323.pcap")
        write_pcap(path, packets)
        env = dict(os.environ, HOME=tmp)  # no personal Wireshark profile
        bad = subprocess.run([tshark, "-n", "-r", path, "-Y", "_ws.malformed || _ws.expert.severity >= error"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert bad.returncode == 0, bad.stderr
        assert bad.stdout.strip() == "", f"tshark flags malformed/error packets:\n{bad.stdout}"
        full = subprocess.run([tshark, "-n", "-r", path, "-V"], capture_output=True, text=True, env=env,
                              timeout=60)
        assert full.returncode == 0, full.stderr
    frames = full.stdout.split("\nFrame ")
    assert len(frames) == len(packets), full.stdout[:2000]
    return frames


# --------------------------------------------------------------------------- fastStart proposals an HDX sends


def _rtp_address(port: int) -> tuple[str, object]:
    return ("unicastAddress", ("iPAddress", {"network": bytes([192, 0, 2, 1]), "tsapIdentifier": port}))


def hdx_fast_start() -> list[bytes]:
    """fastStart as a Polycom HDX proposes it: G.722 and H.264 (transmit) + receive channels."""
    h264 = ("genericVideoCapability", {
        "capabilityIdentifier": ("standard", (0, 0, 8, 241, 0, 0, 1)), "maxBitRate": 10240,
        "collapsing": [
            {"parameterIdentifier": ("standard", 41), "parameterValue": ("booleanArray", 64)},
            {"parameterIdentifier": ("standard", 42), "parameterValue": ("unsignedMin", 78)},
            {"parameterIdentifier": ("standard", 3), "parameterValue": ("unsignedMin", 216)},
            {"parameterIdentifier": ("standard", 4), "parameterValue": ("unsignedMin", 15)},
        ]})

    def params(session: int, rtcp: int, rtp: int | None = None, pt: int | None = None) -> dict:
        p: dict = {"sessionID": session, "mediaControlChannel": _rtp_address(rtcp)}
        if rtp is not None:
            p["mediaChannel"] = _rtp_address(rtp)
        if pt is not None:
            p["dynamicRTPPayloadType"] = pt
        return p

    olcs = [
        {"forwardLogicalChannelNumber": 1, "forwardLogicalChannelParameters": {
            "dataType": ("audioData", ("g722-64k", 20)),
            "multiplexParameters": ("h2250LogicalChannelParameters", params(1, 49153))}},
        {"forwardLogicalChannelNumber": 1, "forwardLogicalChannelParameters": {
            "dataType": ("nullData", 0), "multiplexParameters": ("none", 0)},
         "reverseLogicalChannelParameters": {
            "dataType": ("audioData", ("g722-64k", 20)),
            "multiplexParameters": ("h2250LogicalChannelParameters", params(1, 49153, 49152))}},
        {"forwardLogicalChannelNumber": 2, "forwardLogicalChannelParameters": {
            "dataType": ("videoData", h264),
            "multiplexParameters": ("h2250LogicalChannelParameters", params(2, 49155, pt=109))}},
    ]
    return [asn1.encode_open_logical_channel(o) for o in olcs]


def _tcs_bytes() -> bytes:
    from gateway.catalogue import default_catalogue
    from gateway.h323.capabilities import tcs_message, terminal_capability_set

    return asn1.encode_h245(tcs_message(terminal_capability_set(default_catalogue())))


# --------------------------------------------------------------------------- Q.931 wire format


def test_setup_header_and_ie_order() -> None:
    m = q931.build_setup(0x1234, CONF, CALL, [("h323-ID", "Cầu")], [("dialedDigits", "5000")],
                         ("192.0.2.2", 1720), ("192.0.2.1", 1720), None, True, display="Cầu Đà Nẵng")
    data = m.encode()
    assert data[:5] == bytes([0x08, 0x02, 0x12, 0x34, 0x05])      # PD, CR length, CR (flag 0), SETUP
    ids = [e.identifier for e in m.ies]
    assert ids == sorted(ids) and ids[0] == IE.BEARER_CAPABILITY and ids[-1] == IE.USER_USER
    back = q931.decode(data)
    assert back == m
    assert back.display == "Cau Da Nang"                         # Display is IA5
    assert back.called_number == PartyNumber("5000", 0, 1)
    assert back.calling_number is None                           # no E.164 source alias
    uu = back.ie(IE.USER_USER)
    assert uu is not None and uu.contents[0] == 0x05             # X.208/X.209 coded user information
    raw_len = struct.unpack_from("!H", data, data.index(bytes([0x7E])) + 1)[0]
    assert raw_len == len(uu.contents)                           # two-octet user-user length


def test_call_reference_flag_and_unknown_ies_round_trip() -> None:
    msg = q931.Q931Message(MessageType.NOTIFY, 0x7FFF, True, [
        q931.InformationElement(0xA1),                            # sending complete (single octet)
        q931.InformationElement(0x27, b"\xf1"),                   # notification indicator
        q931.InformationElement(0x96),                            # locking shift to codeset 6
        q931.InformationElement(0x7E, b"\x01abc", codeset=6),     # codeset-6 IE with 1-octet length
        q931.InformationElement(0x42, b"\x00\x01", codeset=6),    # unknown IE kept raw
    ])
    data = msg.encode()
    assert data[2] & 0x80 and data[4] == 0x6E
    assert q931.decode(data) == msg
    assert q931.decode(data).encode() == data


def test_typed_ies() -> None:
    c = Cause(17, location=1, diagnostics=b"\x01")
    assert Cause.from_ie(c.to_ie()) == c and c.name == "User busy"
    assert c.to_ie().contents[:2] == b"\x81\x91"
    # octet 3a present (extension bit 0): cause value is in the next octet
    assert Cause.from_ie(q931.InformationElement(IE.CAUSE, b"\x02\x80\x9f")).value == 31
    bc = BearerCapability.unrestricted_digital(384)
    assert bc.to_ie().contents == b"\x88\x98\x86\xa5"           # unrestricted digital, multirate 6×64k, H.221
    assert BearerCapability.from_ie(bc.to_ie()) == bc
    assert BearerCapability.speech().to_ie().contents == b"\x80\x90\xa2"   # speech, 64k, G.711 µ-law
    calling = PartyNumber("1001", 2, 1, presentation=0, screening=3)
    assert PartyNumber.from_ie(calling.to_ie(IE.CALLING_PARTY_NUMBER)) == calling
    assert q931.ProgressIndicator.from_ie(q931.ProgressIndicator(8).to_ie()).description == 8


@pytest.mark.parametrize("data, words", [
    (b"\x08\x02", "too short"),
    (b"\x09\x02\x00\x01\x05", "protocol discriminator"),
    (b"\x08\x03\x00\x00\x01\x05", "call reference length"),
    (b"\x08\x02\x00", "inside the call reference"),
    (b"\x08\x02\x00\x01", "before the message type"),
    (b"\x08\x02\x00\x01\x85", "bit 8"),
    (b"\x08\x02\x00\x01\x05\x04\x05\x88\x90", "runs past the end"),        # IE length beyond the end
    (b"\x08\x02\x00\x01\x05\x7e\x00\x10\x05\x00", "runs past the end"),    # user-user 2-octet length
    (b"\x08\x02\x00\x01\x05\x04", "runs past the end"),
])
def test_malformed_q931_is_a_typed_error(data: bytes, words: str) -> None:
    with pytest.raises(Q931Error, match=words):
        q931.decode(data)


def test_malformed_user_user_is_a_typed_error() -> None:
    good = q931.build_alerting(1, CALL).encode()
    i = good.index(b"\x7e")
    n = struct.unpack_from("!H", good, i + 1)[0]
    truncated = good[:i + 1] + struct.pack("!H", n - 10) + good[i + 3:i + 3 + n - 10]
    with pytest.raises(Q931Error, match="user-user IE"):
        q931.decode(truncated).user_user
    wrong_pd = good[:i + 3] + b"\x04" + good[i + 4:]
    with pytest.raises(Q931Error, match="protocol discriminator"):
        q931.decode(wrong_pd).user_user
    for bad in (b"\x05", b"\x05\xff\xff\xff"):
        m = q931.Q931Message(MessageType.SETUP, 1, False, [q931.InformationElement(IE.USER_USER, bad)])
        with pytest.raises(Q931Error):
            q931.decode(m.encode()).user_user


# --------------------------------------------------------------------------- builders: round trips


def _body(m: q931.Q931Message) -> tuple[str, dict]:
    body = q931.decode(m.encode()).h323_body
    assert body is not None
    return body


def test_setup_round_trip_with_fast_start_and_tunnelled_tcs() -> None:
    fs = hdx_fast_start()
    tcs = _tcs_bytes()
    m = q931.build_setup(7, CONF, CALL, [("h323-ID", "Cầu"), ("dialedDigits", "1001")],
                         [("dialedDigits", "5000"), ("url-ID", "h323:room@192.0.2.2")],
                         ("192.0.2.2", 1720), ("192.0.2.1", 1720), fs, True, h245_control=[tcs])
    back = q931.decode(m.encode())
    uu = back.user_user["h323-uu-pdu"]
    name, setup = uu["h323-message-body"]
    assert name == "setup" and back.message_type == MessageType.SETUP
    assert uu["h245Tunnelling"] is True and uu["h245Control"] == [tcs]
    assert setup["fastStart"] == fs
    assert setup["conferenceID"] == CONF and setup["callIdentifier"]["guid"] == CALL
    assert asn1.h225_version(setup["protocolIdentifier"]) == 4
    assert [asn1.parse_alias(a) for a in setup["sourceAddress"]] == [("h323-ID", "Cầu"), ("dialledDigits", "1001")]
    assert asn1.parse_transport_address(setup["destCallSignalAddress"]) == ("192.0.2.2", 1720)
    assert setup["sourceInfo"]["vendor"]["productId"] == b"Cau"
    assert back.calling_number.digits == "1001" and back.called_number.digits == "5000"
    # the fastStart proposals are real OpenLogicalChannels
    olc = asn1.decode_open_logical_channel(setup["fastStart"][2])
    assert olc["forwardLogicalChannelParameters"]["dataType"][0] == "videoData"


def test_answer_builders_round_trip() -> None:
    cp = _body(q931.build_call_proceeding(7, CALL, h245_tunnelling=True))
    assert cp[0] == "callProceeding" and cp[1]["callIdentifier"]["guid"] == CALL
    al = q931.decode(q931.build_alerting(7, CALL, progress=8).encode())
    assert al.from_destination and al.progress_indicator.description == 8
    assert al.h323_body[0] == "alerting"
    fs = hdx_fast_start()[:1]
    con = q931.build_connect(7, CONF, CALL, fast_start=fs, h245_address=("192.0.2.2", 30000), display="Cầu")
    name, body = _body(con)
    assert name == "connect" and body["fastStart"] == fs and body["conferenceID"] == CONF
    assert asn1.parse_transport_address(body["h245Address"]) == ("192.0.2.2", 30000)
    assert q931.decode(con.encode()).display == "Cau"
    pr = q931.decode(q931.build_progress(7, CALL).encode())
    assert pr.h323_body[0] == "progress" and pr.progress_indicator.description == 8


def test_release_complete_reason_and_cause() -> None:
    m = q931.decode(q931.build_release_complete(7, CALL, from_destination=True,
                                                reason="calledPartyNotRegistered").encode())
    assert m.message_type == MessageType.RELEASE_COMPLETE
    assert m.cause.value == 20                                   # H.225.0 Table 5
    assert m.h323_body[1]["reason"] == ("calledPartyNotRegistered", 0)
    m = q931.decode(q931.build_release_complete(7, CALL, from_destination=False, cause=17).encode())
    assert m.cause.value == 17 and "reason" not in m.h323_body[1]
    assert q931.cause_to_sip(m.cause.value) == 486
    plain = q931.decode(q931.build_release_complete(7, CALL, from_destination=False).encode())
    assert plain.cause.value == 16 and q931.cause_to_sip(16) is None


def test_facility_builders() -> None:
    m = q931.decode(q931.build_facility(7, CALL, from_destination=True, reason="startH245",
                                        h245_address=("192.0.2.1", 31000), conference_id=CONF).encode())
    name, fac = m.h323_body
    assert name == "facility" and fac["reason"] == ("startH245", 0)
    assert asn1.parse_transport_address(fac["h245Address"]) == ("192.0.2.1", 31000)
    tcs = _tcs_bytes()
    carrier = q931.decode(q931.build_facility(7, CALL, from_destination=False, reason=None,
                                              h245_control=[tcs]).encode())
    uu = carrier.user_user["h323-uu-pdu"]
    assert uu["h323-message-body"] == ("empty", 0) and uu["h245Control"] == [tcs]
    with pytest.raises(Q931Error, match="h245_address"):
        q931.build_facility(7, CALL, from_destination=True, reason="startH245")
    with pytest.raises(Q931Error, match="FacilityReason"):
        q931.build_facility(7, CALL, from_destination=True, reason="bogus")


def test_status_and_information() -> None:
    st = q931.decode(q931.build_status(7, CALL, from_destination=True, call_state=10).encode())
    assert st.cause.value == 30 and st.call_state == 10 and st.h323_body[0] == "status"
    info = q931.decode(q931.build_information(7, CALL, from_destination=False, keypad="123#").encode())
    assert info.keypad == "123#" and info.h323_body[0] == "information"
    enq = q931.decode(q931.build_status_enquiry(7, CALL, from_destination=False).encode())
    assert enq.message_type == MessageType.STATUS_ENQUIRY


def test_builders_reject_impossible_values() -> None:
    with pytest.raises(Q931Error, match="16 bytes"):
        q931.build_alerting(1, b"short")
    with pytest.raises(Q931Error, match="dialledDigits"):
        q931.build_setup(1, CONF, CALL, [], [("dialedDigits", "50a0")], None, None, None, True)
    with pytest.raises(Q931Error, match="call reference"):
        q931.Q931Message(MessageType.SETUP, 0x8000).encode()
    with pytest.raises(Q931Error, match="ReleaseCompleteReason"):
        q931.build_release_complete(1, CALL, from_destination=True, reason="nope")


# --------------------------------------------------------------------------- cause tables


def test_cause_sip_mapping_rfc3398() -> None:
    assert q931.cause_to_sip(1) == 404
    assert q931.cause_to_sip(17) == 486
    assert q931.cause_to_sip(18) == 408
    assert q931.cause_to_sip(19) == 480
    assert q931.cause_to_sip(21) == 403
    assert q931.cause_to_sip(31) == 480
    assert q931.cause_to_sip(34) == 503
    assert q931.cause_to_sip(88) == 488
    assert q931.cause_to_sip(102) == 504
    assert q931.cause_to_sip(50) == 503                          # unlisted: by class
    assert q931.sip_to_cause(404) == 1
    assert q931.sip_to_cause(486) == 17
    assert q931.sip_to_cause(480) == 18
    assert q931.sip_to_cause(403) == 21
    assert q931.sip_to_cause(488) == 88
    assert q931.sip_to_cause(503) == 41
    assert q931.sip_to_cause(408) == 102
    assert q931.sip_to_cause(499) == 127
    assert q931.cause_name(88) == "Incompatible destination"


def test_release_reason_cause_mapping() -> None:
    assert q931.release_reason_to_cause("noBandwidth") == 34
    assert q931.release_reason_to_cause("gatekeeperResources") == 47
    assert q931.release_reason_to_cause("unreachableDestination") == 3
    assert q931.release_reason_to_cause("destinationRejection") == 16
    assert q931.release_reason_to_cause("calledPartyNotRegistered") == 20
    assert q931.release_reason_to_cause("undefinedReason") == 31
    assert q931.cause_to_release_reason(17) == "inConf"
    assert q931.cause_to_release_reason(34) == "noBandwidth"
    assert q931.cause_to_release_reason(99) == "undefinedReason"


# --------------------------------------------------------------------------- tshark


def test_tshark_decodes_call_signalling_cleanly() -> None:
    tcs = _tcs_bytes()
    msgs = [
        q931.build_setup(7, CONF, CALL, [("h323-ID", "Cầu"), ("dialedDigits", "1001")], [("dialedDigits", "5000")],
                         ("192.0.2.2", 1720), ("192.0.2.1", 1720), hdx_fast_start(), True, h245_control=[tcs],
                         display="Cầu"),
        q931.build_call_proceeding(7, CALL),
        q931.build_alerting(7, CALL, progress=8),
        q931.build_connect(7, CONF, CALL, fast_start=hdx_fast_start()[:1], h245_address=("192.0.2.2", 30000)),
        q931.build_facility(7, CALL, from_destination=True, reason="startH245", h245_address=("192.0.2.2", 30001)),
        q931.build_facility(7, CALL, from_destination=False, reason=None, h245_control=[tcs]),
        q931.build_information(7, CALL, from_destination=False, keypad="5"),
        q931.build_status(7, CALL, from_destination=True, call_state=10),
        q931.build_release_complete(7, CALL, from_destination=True, reason="destinationRejection"),
    ]
    frames = tshark_frames([("cs", m.encode()) for m in msgs])
    setup, proceeding, alerting, connect, start_h245, carrier, information, status, release = frames
    assert "h323-message-body: setup" in setup and "fastStart: 3 items" in setup
    assert "terminalCapabilitySet" in setup and "g722-64k" in setup and "Profile" in setup
    assert "t35CountryCode: Viet Nam (188)" in setup and "productId: Cau" in setup
    assert "callProceeding" in proceeding and "alerting" in alerting
    assert "connect" in connect and "h245Address" in connect and "fastStart: 1 item" in connect
    assert "startH245" in start_h245
    assert "empty" in carrier and "terminalCapabilitySet" in carrier
    assert "Keypad facility" in information or "Keypad" in information
    assert "STATUS" in status
    assert "releaseComplete" in release and "destinationRejection" in release
    assert "Normal call clearing" in release


def test_mutated_messages_never_crash() -> None:
    """Random byte flips and truncations of a real SETUP: decoding succeeds or raises Q931Error."""
    import random

    rng = random.Random(1720)
    good = q931.build_setup(7, CONF, CALL, [("h323-ID", "Cầu")], [("dialedDigits", "5000")], ("192.0.2.2", 1720),
                            None, hdx_fast_start(), True).encode()
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)):]
        try:
            m = q931.decode(bytes(data))
            m.user_user, m.cause, m.display, m.called_number, m.calling_number, m.bearer_capability
            outcomes["ok"] += 1
        except Q931Error:
            outcomes["error"] += 1
    assert outcomes["ok"] and outcomes["error"]
