"""H.225.0 RAS: every builder round-trips through parse_ras, captured-style messages parse,
bad datagrams are typed errors, and tshark decodes what we send."""
from __future__ import annotations

import pytest

from gateway.h323 import asn1, ras
from gateway.h323.ras import RasError, parse_ras
from tests.test_h323_q931 import tshark_frames

CONF = bytes(range(16))
CALL = bytes(range(16, 32))
CS = ("192.0.2.1", 1720)
RAS = ("192.0.2.1", 1719)
GK = ("192.0.2.10", 1719)


def test_gatekeeper_discovery() -> None:
    grq = parse_ras(ras.build_grq(1, RAS, aliases=[("h323-ID", "Điểm cầu Hà Giang")]))
    assert grq.abbreviation == "GRQ" and grq.seq == 1 and grq.protocol_version == 4
    assert grq.ras_addresses == [RAS] and grq.aliases == [("h323-ID", "Điểm cầu Hà Giang")]
    assert grq.endpoint_type == "terminal" and grq.vendor["productId"] == b"Cau"
    gcf = parse_ras(ras.build_gcf(1, GK, gatekeeper_identifier="CauGK"))
    assert (gcf.kind, gcf.gatekeeper_identifier, gcf.ras_addresses) == ("gatekeeperConfirm", "CauGK", [GK])
    grj = parse_ras(ras.build_grj(1, "terminalExcluded"))
    assert grj.reject_reason == "terminalExcluded"


def test_registration_full_and_keepalive() -> None:
    rrq = parse_ras(ras.build_rrq(2, [CS], [RAS], aliases=[("h323-ID", "room1"), ("dialedDigits", "1001")],
                                  time_to_live=300, endpoint_kind="mcu"))
    assert rrq.abbreviation == "RRQ" and not rrq.keep_alive and rrq.discovery_complete is False
    assert rrq.call_signal_addresses == [CS] and rrq.ras_addresses == [RAS]
    assert rrq.aliases == [("h323-ID", "room1"), ("dialledDigits", "1001")]
    assert rrq.time_to_live == 300 and rrq.endpoint_type == "mcu"
    keep = parse_ras(ras.build_keepalive_rrq(3, [CS], [RAS], "EP1", "CauGK", 300))
    assert keep.keep_alive and keep.endpoint_identifier == "EP1" and keep.gatekeeper_identifier == "CauGK"
    assert keep.aliases == []
    with pytest.raises(RasError, match="endpointIdentifier"):
        ras.build_rrq(3, [CS], [RAS], keep_alive=True)
    rcf = parse_ras(ras.build_rcf(2, [CS], "EP1", aliases=[("h323-ID", "room1")], gatekeeper_identifier="CauGK",
                                  time_to_live=300))
    assert (rcf.endpoint_identifier, rcf.time_to_live, rcf.call_signal_addresses) == ("EP1", 300, [CS])
    assert parse_ras(ras.build_rrj(2, "invalidAlias")).reject_reason == "invalidAlias"
    urq = parse_ras(ras.build_urq(4, [CS], endpoint_identifier="EP1", reason="ttlExpired"))
    assert urq.unregistration_reason == "ttlExpired" and urq.endpoint_identifier == "EP1"
    assert parse_ras(ras.build_ucf(4)).abbreviation == "UCF"
    assert parse_ras(ras.build_urj(4, "callInProgress")).reject_reason == "callInProgress"


def test_admission_bandwidth_disengage() -> None:
    arq = parse_ras(ras.build_arq(5, "EP1", [("h323-ID", "room1")], 3840, 77, CONF, CALL,
                                  destination_aliases=[("dialedDigits", "5000")], call_model="direct",
                                  src_call_signal_address=CS))
    assert arq.abbreviation == "ARQ" and arq.bandwidth == 3840 and arq.call_reference_value == 77
    assert arq.conference_id == CONF and arq.call_identifier == CALL and arq.answer_call is False
    assert arq.destination_info == [("dialledDigits", "5000")] and arq.call_model == "direct"
    assert arq.src_call_signal_address == CS and arq.aliases == [("h323-ID", "room1")]
    acf = parse_ras(ras.build_acf(5, 3840, ("192.0.2.3", 1720), call_model="gatekeeperRouted"))
    assert acf.dest_call_signal_address == ("192.0.2.3", 1720) and acf.call_model == "gatekeeperRouted"
    assert parse_ras(ras.build_arj(5, "calledPartyNotRegistered")).reject_reason == "calledPartyNotRegistered"
    brq = parse_ras(ras.build_brq(6, "EP1", CONF, 77, 7680, CALL))
    assert brq.bandwidth == 7680 and brq.call_identifier == CALL
    assert parse_ras(ras.build_bcf(6, 7680)).bandwidth == 7680
    brj = parse_ras(ras.build_brj(6, "insufficientResources", 3840))
    assert brj.reject_reason == "insufficientResources" and brj.value["allowedBandWidth"] == 3840
    drq = parse_ras(ras.build_drq(7, "EP1", CONF, 77, CALL, reason="forcedDrop", answered_call=True))
    assert drq.disengage_reason == "forcedDrop" and drq.call_identifier == CALL and drq.value["answeredCall"]
    assert parse_ras(ras.build_dcf(7)).abbreviation == "DCF"
    assert parse_ras(ras.build_drj(7)).reject_reason == "notRegistered"


def test_location_and_status() -> None:
    lrq = parse_ras(ras.build_lrq(8, [("dialedDigits", "5000")], GK, source_aliases=[("h323-ID", "cau")]))
    assert lrq.destination_info == [("dialledDigits", "5000")] and lrq.reply_address == GK
    lcf = parse_ras(ras.build_lcf(8, ("192.0.2.4", 1720), ("192.0.2.4", 1719)))
    assert lcf.call_signal_addresses == [("192.0.2.4", 1720)] and lcf.ras_addresses == [("192.0.2.4", 1719)]
    assert parse_ras(ras.build_lrj(8, "unallocatedNumber")).reject_reason == "unallocatedNumber"
    irq = parse_ras(ras.build_irq(9, 0, reply_address=GK))
    assert irq.call_reference_value == 0 and irq.reply_address == GK
    irr = parse_ras(ras.build_irr(9, "EP1", RAS, [CS], aliases=[("h323-ID", "room1")]))
    assert irr.endpoint_identifier == "EP1" and irr.ras_addresses == [RAS] and irr.aliases == [("h323-ID", "room1")]


def test_polycom_style_rrq_parses() -> None:
    """An RRQ as an HDX sends it (H.225 v4, terminal + gatekeeper-less discovery, E.164 and h323-ID,
    its own vendor), built from value notation as the endpoint's ASN.1 stack would."""
    value = ("registrationRequest", {
        "requestSeqNum": 4711, "protocolIdentifier": (0, 0, 8, 2250, 0, 4), "discoveryComplete": True,
        "callSignalAddress": [("ipAddress", {"ip": bytes([10, 0, 0, 20]), "port": 1720})],
        "rasAddress": [("ipAddress", {"ip": bytes([10, 0, 0, 20]), "port": 1719})],
        "terminalType": {"terminal": {}, "mc": False, "undefinedNode": False},
        "terminalAlias": [("h323-ID", "HDX 8000 HG"), ("dialledDigits", "2001")],
        "endpointVendor": {"vendor": {"t35CountryCode": 181, "t35Extension": 0, "manufacturerCode": 1},
                           "productId": b"HDX 8000 HD", "versionId": b"Release 3.1.14"},
        "timeToLive": 60, "keepAlive": False, "willSupplyUUIEs": False, "maintainConnection": False,
    })
    m = parse_ras(asn1.encode_ras(value))
    assert m.kind == "registrationRequest" and m.seq == 4711 and m.discovery_complete is True
    assert m.aliases == [("h323-ID", "HDX 8000 HG"), ("dialledDigits", "2001")]
    assert m.call_signal_addresses == [("10.0.0.20", 1720)] and m.time_to_live == 60
    assert m.vendor["productId"] == b"HDX 8000 HD"


@pytest.mark.parametrize("data", [b"", b"\x0e", b"\x0e\x00\x00\x06", b"\xff\xff\xff\xff"])
def test_malformed_datagrams_raise_ras_error(data: bytes) -> None:
    with pytest.raises(RasError):
        parse_ras(data)


def test_wrong_protocol_identifier_is_refused() -> None:
    data = asn1.encode_ras(("gatekeeperReject", {"requestSeqNum": 1, "protocolIdentifier": (0, 0, 8, 245, 0, 7),
                                                 "rejectReason": ("undefinedReason", 0)}))
    with pytest.raises(RasError, match="protocolIdentifier"):
        parse_ras(data)


def test_builders_validate() -> None:
    with pytest.raises(RasError, match="requestSeqNum"):
        ras.build_ucf(0)
    with pytest.raises(RasError, match="AdmissionRejectReason"):
        ras.build_arj(1, "busy")
    with pytest.raises(RasError, match="16 bytes"):
        ras.build_drq(1, "EP1", b"x", 1, CALL)
    with pytest.raises(RasError, match="destination alias"):
        ras.build_lrq(1, [], GK)
    with pytest.raises(RasError):
        ras.build_bcf(1, -5)


def test_tshark_decodes_ras_cleanly() -> None:
    msgs = [
        ras.build_grq(1, RAS, aliases=[("h323-ID", "Cầu")]),
        ras.build_gcf(1, GK, gatekeeper_identifier="CauGK"),
        ras.build_rrq(2, [CS], [RAS], aliases=[("h323-ID", "room1"), ("dialedDigits", "1001")], time_to_live=300),
        ras.build_keepalive_rrq(3, [CS], [RAS], "EP1", "CauGK", 300),
        ras.build_rcf(2, [CS], "EP1", gatekeeper_identifier="CauGK", time_to_live=300),
        ras.build_arq(5, "EP1", [("h323-ID", "room1")], 3840, 77, CONF, CALL,
                      destination_aliases=[("dialedDigits", "5000")]),
        ras.build_acf(5, 3840, ("192.0.2.3", 1720)),
        ras.build_lrq(8, [("dialedDigits", "5000")], GK),
        ras.build_lcf(8, ("192.0.2.4", 1720), ("192.0.2.4", 1719)),
        ras.build_drq(7, "EP1", CONF, 77, CALL),
        ras.build_dcf(7),
        ras.build_urq(4, [CS], endpoint_identifier="EP1"),
        ras.build_arj(5, "calledPartyNotRegistered"),
        ras.build_brq(6, "EP1", CONF, 77, 7680, CALL),
        ras.build_irr(9, "EP1", RAS, [CS]),
    ]
    frames = tshark_frames([("ras", m) for m in msgs])
    expected = ["gatekeeperRequest", "gatekeeperConfirm", "registrationRequest", "keepAlive: True",
                "registrationConfirm", "admissionRequest", "admissionConfirm", "locationRequest",
                "locationConfirm", "disengageRequest", "disengageConfirm", "unregistrationRequest",
                "calledPartyNotRegistered", "bandwidthRequest", "infoRequestResponse"]
    for text, word in zip(frames, expected):
        assert word in text, word
    assert "h323-ID: Cầu" in frames[0]
    assert "timeToLive: 300" in frames[2]


def test_mutated_datagrams_never_crash() -> None:
    import random

    rng = random.Random(1719)
    good = ras.build_arq(5, "EP1", [("h323-ID", "room1")], 3840, 77, CONF, CALL,
                         destination_aliases=[("dialedDigits", "5000")])
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(1, len(data)):]
        try:
            parse_ras(bytes(data))
            outcomes["ok"] += 1
        except RasError:
            outcomes["error"] += 1
    assert outcomes["ok"] and outcomes["error"]
