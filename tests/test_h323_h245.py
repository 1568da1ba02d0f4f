"""H.245 control session: two sessions back to back through real PER bytes."""
from __future__ import annotations

import copy
from typing import Any

import pytest
from twisted.internet import task

from gateway.catalogue import default_catalogue
from gateway.media.codecs.audio import AudioParams
from gateway.h323 import asn1, q931
from gateway.h323.capabilities import parse_capabilities, terminal_capability_set
from gateway.h323.h245 import H245Session, LogicalChannel, h245_address, parse_h245_address

CAT = default_catalogue()
H264_OID = (0, 0, 8, 241, 0, 0, 1)


def vsx_tcs() -> dict[str, Any]:
    """A VSX-like set: G.722, G.711 µ-law, H.263 at CIF (MPI 2) and QCIF (MPI 1), no SQCIF."""
    tcs = terminal_capability_set(CAT, ("G722", "PCMU"), ("H263",))
    for e in tcs["capabilityTable"]:
        kind, cap = e["capability"]
        if kind == "receiveVideoCapability":
            h263 = dict(cap[1])
            h263.pop("sqcifMPI")
            h263.update(cifMPI=2, qcifMPI=1, maxBitRate=7680)
            e["capability"] = (kind, ("h263VideoCapability", h263))
    return tcs


def hdx_tcs(level: int = 85) -> dict[str, Any]:
    """What an HDX sends, written out in pycrate value notation: G.722, G.711 µ/A-law,
    H.264 as genericVideoCapability (H.241) with Profile (Baseline) and Level, DTMF."""
    return {
        "sequenceNumber": 1,
        "protocolIdentifier": (0, 0, 8, 245, 0, 13),
        "multiplexCapability": ("h2250Capability", {
            "maximumAudioDelayJitter": 60,
            "receiveMultipointCapability": {"multicastCapability": False, "multiUniCastConference": False,
                                            "mediaDistributionCapability": [{
                                                "centralizedControl": False, "distributedControl": False,
                                                "centralizedAudio": False, "distributedAudio": False,
                                                "centralizedVideo": False, "distributedVideo": False}]},
            "transmitMultipointCapability": {"multicastCapability": False, "multiUniCastConference": False,
                                             "mediaDistributionCapability": [{
                                                 "centralizedControl": False, "distributedControl": False,
                                                 "centralizedAudio": False, "distributedAudio": False,
                                                 "centralizedVideo": False, "distributedVideo": False}]},
            "receiveAndTransmitMultipointCapability": {
                "multicastCapability": False, "multiUniCastConference": False,
                "mediaDistributionCapability": [{
                    "centralizedControl": False, "distributedControl": False, "centralizedAudio": False,
                    "distributedAudio": False, "centralizedVideo": False, "distributedVideo": False}]},
            "mcCapability": {"centralizedConferenceMC": False, "decentralizedConferenceMC": False},
            "rtcpVideoControlCapability": True,
            "mediaPacketizationCapability": {"h261aVideoPacketization": False, "rtpPayloadType": [
                {"payloadDescriptor": ("oid", (0, 0, 8, 241, 0, 0, 0, 0))},
                {"payloadDescriptor": ("oid", (0, 0, 8, 241, 0, 0, 0, 1))}]},
        }),
        "capabilityTable": [
            {"capabilityTableEntryNumber": 1, "capability": ("receiveAudioCapability", ("g722-64k", 20))},
            {"capabilityTableEntryNumber": 2, "capability": ("receiveAudioCapability", ("g711Ulaw64k", 30))},
            {"capabilityTableEntryNumber": 3, "capability": ("receiveAudioCapability", ("g711Alaw64k", 30))},
            {"capabilityTableEntryNumber": 4, "capability": ("receiveVideoCapability", ("genericVideoCapability", {
                "capabilityIdentifier": ("standard", H264_OID),
                "maxBitRate": 20480,
                "collapsing": [
                    {"parameterIdentifier": ("standard", 41), "parameterValue": ("booleanArray", 64)},
                    {"parameterIdentifier": ("standard", 42), "parameterValue": ("unsignedMin", level)},
                ]}))},
            {"capabilityTableEntryNumber": 5, "capability": ("receiveAndTransmitUserInputCapability", ("dtmf", 0))},
            {"capabilityTableEntryNumber": 6,
             "capability": ("receiveAndTransmitUserInputCapability", ("basicString", 0))},
        ],
        "capabilityDescriptors": [{"capabilityDescriptorNumber": 0,
                                   "simultaneousCapabilities": [[1, 2, 3], [4], [5], [6]]}],
    }


class Wire:
    """Two sessions joined by a queue of PER-encoded PDUs (what a TCP link would carry)."""

    def __init__(self, a_kw: dict[str, Any] | None = None, b_kw: dict[str, Any] | None = None) -> None:
        self.clock = task.Clock()
        self.queue: list[tuple[str, bytes]] = []
        self.log: list[tuple[str, Any]] = []      # (receiver, decoded message)
        self.raw: list[bytes] = []
        self.events: dict[str, list[tuple[Any, ...]]] = {"a": [], "b": []}
        self.a = H245Session(CAT, send=lambda d: self.queue.append(("b", d)), clock=self.clock, name="a",
                             **(a_kw or {}))
        self.b = H245Session(CAT, send=lambda d: self.queue.append(("a", d)), clock=self.clock, name="b",
                             **(b_kw or {}))
        for side, s, host in (("a", self.a, "10.0.0.1"), ("b", self.b, "10.0.0.2")):
            self._record(side, s, host)

    def _record(self, side: str, s: H245Session, host: str) -> None:
        ev = self.events[side]
        base = {"audio": 5000, "video": 5100}
        s.on_remote_capabilities = lambda caps: ev.append(("caps", caps))
        s.on_msd_result = lambda r: ev.append(("msd", r))
        s.on_ready = lambda: ev.append(("ready",))
        s.on_open_request = lambda ch: (ev.append(("open_request", ch)),
                                        ((host, base[ch.media]), (host, base[ch.media] + 1)))[1]
        s.on_channel_open = lambda ch: ev.append(("open", ch))
        s.on_channel_closed = lambda ch, reason: ev.append(("closed", ch, reason))
        s.on_fast_update = lambda n: ev.append(("fast_update", n))
        s.on_flow_control = lambda n, rate: ev.append(("flow", n, rate))
        s.on_user_input = lambda d: ev.append(("uii", d))
        s.on_end_session = lambda: ev.append(("end",))
        s.on_failure = lambda reason: ev.append(("failure", reason))

    def session(self, side: str) -> H245Session:
        return self.a if side == "a" else self.b

    def pump(self, limit: int = 1000) -> int:
        n = 0
        while self.queue:
            to, data = self.queue.pop(0)
            self.log.append((to, asn1.decode_h245(data)))
            self.raw.append(data)
            self.session(to).receive(data)
            n += 1
            assert n < limit, "PDU storm"
        return n

    def got(self, side: str, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events[side] if e[0] == kind]

    def messages(self, to: str, name: str) -> list[Any]:
        return [m[1][1] for t, m in self.log if t == to and m[1][0] == name]

    def connect(self) -> None:
        self.a.start()
        self.b.start()
        self.pump()


def open_media(w: Wire) -> None:
    for side in ("a", "b"):
        s = w.session(side)
        host = "10.0.0.1" if side == "a" else "10.0.0.2"
        s.open_channel("audio", local_rtcp=(host, 5001))
        s.open_channel("video", local_rtcp=(host, 5101))
    w.pump()


def tx(s: H245Session, media: str) -> LogicalChannel:
    return next(c for c in s.channels.values() if c.direction == "tx" and c.media == media and c.state == "open")


def rx(s: H245Session, media: str) -> LogicalChannel:
    return next(c for c in s.channels.values() if c.direction == "rx" and c.media == media and c.state == "open")


# --------------------------------------------------------------------------- capabilities + MSD


def test_capabilities_and_master_slave_vsx() -> None:
    w = Wire(a_kw={}, b_kw={"tcs": vsx_tcs(), "terminal_type": 50})
    w.connect()
    caps_a = w.got("a", "caps")[0][1]
    assert [c.codec_name for c in caps_a if c.media in ("audio", "video")] == ["G722", "PCMU", "H263"]
    h263 = next(c for c in caps_a if c.codec_name == "H263")
    assert h263.params.sizes.get("CIF") == 2 and "SQCIF" not in h263.params.sizes
    caps_b = w.got("b", "caps")[0][1]
    assert {"G722", "PCMU", "PCMA", "H264", "H263"} <= {c.codec_name for c in caps_b}
    # MCU (190) beats terminal (50): exactly one master, both agree
    assert w.got("a", "msd") == [("msd", "master")] and w.got("b", "msd") == [("msd", "slave")]
    assert w.a.master is True and w.b.master is False
    assert w.a.tcs_sent_acked and w.b.tcs_sent_acked and w.a.remote_tcs_received and w.b.remote_tcs_received
    assert w.got("a", "ready") and w.got("b", "ready")
    # our TCS carries the H2250Capability H.323 asks for
    tcs = w.messages("b", "terminalCapabilitySet")[0]
    assert tcs["multiplexCapability"][0] == "h2250Capability"


@pytest.mark.parametrize("seed", range(8))
def test_msd_same_terminal_type_gives_one_master(seed: int) -> None:
    import random

    w = Wire(a_kw={"rng": random.Random(seed)}, b_kw={"rng": random.Random(seed + 100)})
    w.connect()
    results = {w.got("a", "msd")[0][1], w.got("b", "msd")[0][1]}
    assert results == {"master", "slave"}
    assert w.a.master != w.b.master


class Scripted:
    """An rng whose 24-bit draws come from a list (then repeat the last)."""

    def __init__(self, values: list[int]) -> None:
        self.values = list(values)

    def getrandbits(self, n: int) -> int:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def test_msd_identical_numbers_are_retried() -> None:
    # the constructor draws once, start() draws again: equal twice, then different;
    # (their - ours) mod 2^24 below 0x800000 makes us master (H.245 §8.2, as h323plus does)
    w = Wire(a_kw={"rng": Scripted([1, 777, 777, 100])}, b_kw={"rng": Scripted([2, 777, 777, 900])})
    w.connect()
    assert len(w.messages("b", "masterSlaveDetermination")) == 3      # two indeterminate rounds
    assert w.got("a", "msd") == [("msd", "master")] and w.got("b", "msd") == [("msd", "slave")]
    assert not w.got("a", "failure") and not w.got("b", "failure")


def test_msd_always_identical_fails_after_retries() -> None:
    w = Wire(a_kw={"rng": Scripted([5])}, b_kw={"rng": Scripted([5])})
    w.connect()
    assert w.a.msd_state == "failed" and w.a.master is None
    assert any("identical numbers" in e[1] for e in w.got("a", "failure"))
    assert len(w.messages("b", "masterSlaveDetermination")) == 3      # N100 = 3 attempts


def test_msd_incoming_only_and_t106_timeout() -> None:
    w = Wire(b_kw={"terminal_type": 60})
    w.b.determine_master_slave()          # only b (a gateway) starts: a (an MCU) answers from idle
    w.pump()
    assert w.a.master is True and w.b.master is False
    lonely = Wire()
    lonely.a.start()
    lonely.queue.clear()                  # nobody answers
    lonely.clock.advance(30)
    reasons = [e[1] for e in lonely.got("a", "failure")]
    assert any("T106" in r for r in reasons) and any("T101" in r for r in reasons)
    sent = [asn1.decode_h245(d)[1][0] for _, d in lonely.queue]
    assert "masterSlaveDeterminationRelease" in sent and "terminalCapabilitySetRelease" in sent


def test_tcs_reject_reaches_on_failure() -> None:
    bad = terminal_capability_set(CAT, ("PCMU",), ())
    bad["capabilityDescriptors"][0]["simultaneousCapabilities"].append([99])   # undefined entry
    w = Wire(a_kw={"tcs": bad})
    w.connect()
    assert w.messages("a", "terminalCapabilitySetReject")[0]["cause"] == ("undefinedTableEntryUsed", 0)
    assert any("rejected" in e[1] and "undefinedTableEntryUsed" in e[1] for e in w.got("a", "failure"))
    assert not w.b.remote_tcs_received and not w.a.tcs_sent_acked


# --------------------------------------------------------------------------- logical channels


def test_vsx_and_cau_open_g722_and_h263_both_ways() -> None:
    w = Wire(b_kw={"tcs": vsx_tcs(), "terminal_type": 50})
    w.connect()
    open_media(w)
    for s in (w.a, w.b):
        assert tx(s, "audio").codec_name == "G722" and rx(s, "audio").codec_name == "G722"
        assert tx(s, "video").codec_name == "H263" and rx(s, "video").codec_name == "H263"
    # Cầu → VSX: H.263 narrowed to what the VSX receives: CIF at MPI 2, QCIF, no SQCIF, its bitrate
    v = tx(w.a, "video")
    assert v.payload_type == 34 and v.session_id == 2
    h263 = v.capability[1][1]
    assert (h263["cifMPI"], h263["qcifMPI"], "sqcifMPI" in h263) == (2, 1, False)
    assert h263["maxBitRate"] == 3840            # min(ours 3840, VSX 7680)
    # the OLCAck carries the address the callback returned; our RTCP went in the OLC
    assert v.remote_media == ("10.0.0.2", 5100) and v.remote_rtcp == ("10.0.0.2", 5101)
    assert tx(w.b, "audio").remote_media == ("10.0.0.1", 5000)
    assert rx(w.b, "video").remote_rtcp == ("10.0.0.1", 5101)
    assert rx(w.b, "video").local_media == ("10.0.0.2", 5100)
    olc = w.messages("b", "openLogicalChannel")[0]
    params = olc["forwardLogicalChannelParameters"]["multiplexParameters"][1]
    assert params["sessionID"] == 1 and params["silenceSuppression"] is False
    assert parse_h245_address(params["mediaControlChannel"]) == ("10.0.0.1", 5001)
    assert [e[1].codec_name for e in w.got("a", "open")] == ["G722", "H263"]


def test_hdx_and_cau_open_g722_and_h264_with_level() -> None:
    w = Wire(b_kw={"tcs": hdx_tcs(level=85), "terminal_type": 50})
    w.connect()
    open_media(w)
    assert tx(w.a, "audio").codec_name == "G722" and tx(w.b, "audio").codec_name == "G722"
    v = tx(w.a, "video")
    assert v.codec_name == "H264" and v.format.params.level == 31         # min(ours 3.1, HDX 4.0)
    assert v.format.bitrate_cap == 1_024_000 and v.payload_type == 96
    olc = w.messages("b", "openLogicalChannel")[1]
    p = olc["forwardLogicalChannelParameters"]["multiplexParameters"][1]
    assert p["dynamicRTPPayloadType"] == 96
    assert p["mediaPacketization"] == ("rtpPayloadType", {"payloadDescriptor": ("oid", (0, 0, 8, 241, 0, 0, 0, 0)),
                                                          "payloadType": 96})
    got = rx(w.b, "video")
    assert got.codec_name == "H264" and got.payload_type == 96 and got.format.params.packetization_mode == 0
    # the HDX-side session sends H.264 at its own level narrowed to ours
    assert tx(w.b, "video").format.params.level == 31 and rx(w.a, "video").format.params.level == 31
    # audio frames narrowed: HDX receives G.711 up to 30 ms, G.722 20 ms
    assert tx(w.a, "audio").capability == ("audioData", ("g722-64k", 20))


def test_open_channel_preconditions_and_explicit_codec() -> None:
    w = Wire(b_kw={"tcs": vsx_tcs(), "terminal_type": 50})
    with pytest.raises(RuntimeError, match="capabilities"):
        w.a.open_channel("audio", local_rtcp=("10.0.0.1", 5001))
    w.connect()
    with pytest.raises(ValueError, match="H264"):
        w.a.open_channel("video", "H264", local_rtcp=("10.0.0.1", 5101))
    ch = w.a.open_channel("audio", "PCMU", local_rtcp=("10.0.0.1", 5001), params=AudioParams(30))
    w.pump()
    assert ch.state == "open" and ch.capability == ("audioData", ("g711Ulaw64k", 20))   # ≤ VSX's 20
    assert ch.payload_type == 0


def test_close_both_ways() -> None:
    w = Wire()
    w.connect()
    open_media(w)
    a_audio, b_video = tx(w.a, "audio"), tx(w.b, "video")
    w.a.close_channel(a_audio.number)
    w.b.close_channel(b_video.number, reason="reopen")
    w.pump()
    assert a_audio.state == "closed" and b_video.state == "closed"
    assert ("closed", a_audio, "normal") in w.got("a", "closed")
    b_closed = [(e[1].key, e[2]) for e in w.got("b", "closed")]
    assert (("rx", a_audio.number), "remote") in b_closed
    assert (("rx", b_video.number), "remote:reopen") in [(e[1].key, e[2]) for e in w.got("a", "closed")]
    assert w.b.channels[("rx", a_audio.number)].state == "closed"
    assert len(w.messages("a", "closeLogicalChannelAck")) == 1 and len(w.messages("b", "closeLogicalChannelAck")) == 1


def test_request_channel_close() -> None:
    w = Wire()
    w.connect()
    open_media(w)
    theirs = rx(w.a, "video")
    w.a.request_channel_close(theirs.number)
    w.pump()
    assert w.messages("a", "requestChannelCloseAck")[0]["forwardLogicalChannelNumber"] == theirs.number
    assert w.b.channels[("tx", theirs.number)].state == "closed"
    assert theirs.state == "closed"
    # refused by the owner's callback, and for an unknown channel
    w.b.on_close_request = lambda ch: False
    w.a.close_channel(rx(w.a, "audio").number, direction="rx")
    w.pump()
    assert rx(w.a, "audio").state == "open" and len(w.messages("a", "requestChannelCloseReject")) == 1


def test_open_rejected_by_callback_and_unknown_codec() -> None:
    w = Wire()
    w.connect()
    w.b.on_open_request = lambda ch: None if ch.media == "video" else "insufficientBandwidth"
    a = w.a.open_channel("audio", local_rtcp=("10.0.0.1", 5001))
    v = w.a.open_channel("video", local_rtcp=("10.0.0.1", 5101))
    w.pump()
    assert (a.state, a.reason) == ("rejected", "insufficientBandwidth")
    assert (v.state, v.reason) == ("rejected", "unspecified")
    w.b.on_open_request = lambda ch: (("not an address", 1), ("10.0.0.2", 2))     # a broken call layer
    broken = w.a.open_channel("audio", local_rtcp=("10.0.0.1", 5001))
    w.pump()
    assert broken.state == "rejected" and ("rx", broken.number) not in w.b.channels
    assert ("closed", a, "rejected:insufficientBandwidth") in w.got("a", "closed")
    # an OLC with a data type nobody here knows (H.261) → dataTypeNotSupported
    w.b.receive(asn1.encode_h245(("request", ("openLogicalChannel", {
        "forwardLogicalChannelNumber": 40,
        "forwardLogicalChannelParameters": {
            "dataType": ("videoData", ("h261VideoCapability", {
                "qcifMPI": 1, "temporalSpatialTradeOffCapability": False, "maxBitRate": 3000,
                "stillImageTransmission": False})),
            "multiplexParameters": ("h2250LogicalChannelParameters", {"sessionID": 2})}}))))
    assert asn1.decode_h245(w.queue[-1][1])[1] == ("openLogicalChannelReject", {
        "forwardLogicalChannelNumber": 40, "cause": ("dataTypeNotSupported", 0)})


def test_olc_timeout_t103() -> None:
    w = Wire()
    w.connect()
    ch = w.a.open_channel("audio", local_rtcp=("10.0.0.1", 5001))
    w.queue.clear()                       # the OLC is lost
    w.clock.advance(30)
    assert (ch.state, ch.reason) == ("closed", "timeout")
    assert ("closed", ch, "timeout") in w.got("a", "closed")
    assert asn1.decode_h245(w.queue[-1][1])[1][0] == "closeLogicalChannel"


def test_master_slave_conflict_slave_follows_master() -> None:
    # a (master, needs symmetric codecs) opens G722; b (slave) opens PCMU at the same time
    w = Wire(a_kw={"symmetric_codecs": True}, b_kw={"terminal_type": 50})
    w.connect()
    mine = w.a.open_channel("audio", "G722", local_rtcp=("10.0.0.1", 5001))
    theirs = w.b.open_channel("audio", "PCMU", local_rtcp=("10.0.0.2", 5001))
    w.pump()
    assert mine.state == "open"
    assert (theirs.state, theirs.reason) == ("rejected", "masterSlaveConflict")
    again = tx(w.b, "audio")
    assert again.codec_name == "G722" and again.number != theirs.number
    assert rx(w.a, "audio").codec_name == "G722"


def test_empty_capability_set_closes_our_channels() -> None:
    w = Wire()
    w.connect()
    open_media(w)
    w.b.receive(asn1.encode_h245(("request", ("terminalCapabilitySet", {
        "sequenceNumber": 9, "protocolIdentifier": asn1.H245_PROTOCOL_ID}))))
    w.pump()
    assert all(c.state == "closed" for c in w.b.channels.values() if c.direction == "tx")
    assert not w.b.remote_tcs_received and w.b.msd_state == "idle"


# --------------------------------------------------------------------------- commands and indications


def test_fast_update_and_flow_control() -> None:
    w = Wire()
    w.connect()
    open_media(w)
    video_in = rx(w.a, "video")
    w.a.request_fast_update(video_in.number)
    w.a.send_flow_control(video_in.number, 2560)
    w.a.send_flow_control(None, None)
    w.pump()
    assert w.got("b", "fast_update") == [("fast_update", video_in.number)]
    assert ("tx", video_in.number) in w.b.channels
    assert w.got("b", "flow") == [("flow", video_in.number, 2560), ("flow", None, None)]


@pytest.mark.parametrize("form", ["alphanumeric", "signal", None])
def test_user_input_digits(form: str | None) -> None:
    w = Wire(b_kw={"tcs": hdx_tcs()})
    w.connect()
    w.a.send_user_input("12#", form=form)
    w.pump()
    assert [e[1] for e in w.got("b", "uii")] == ["1", "2", "#"]
    kinds = {m[0] for m in w.messages("b", "userInput")}
    assert kinds == {"alphanumeric" if form == "alphanumeric" else "signal"}   # HDX declares dtmf
    if form != "alphanumeric":
        assert w.messages("b", "userInput")[2] == ("signal", {"signalType": "#", "duration": 200})
    with pytest.raises(ValueError):
        w.a.send_user_input("x")


def test_round_trip_delay_with_clock() -> None:
    w = Wire()
    w.connect()
    results: list[float] = []
    w.a.round_trip_delay().addCallback(results.append)
    w.clock.advance(0.25)                 # the request is "in flight" for 250 ms
    w.pump()
    assert results == [pytest.approx(0.25)]
    failures: list[Any] = []
    w.a.round_trip_delay().addErrback(failures.append)
    w.queue.clear()
    w.clock.advance(10)
    assert failures and failures[0].check(TimeoutError)


def test_end_session() -> None:
    w = Wire()
    w.connect()
    open_media(w)
    w.a.end_session()
    w.pump()
    assert w.got("b", "end") == [("end",)]
    assert w.a.ended and w.b.ended
    assert all(c.state == "closed" for s in (w.a, w.b) for c in s.channels.values())
    w.b.receive(asn1.encode_h245(("request", ("roundTripDelayRequest", {"sequenceNumber": 1}))))
    assert not w.queue                     # nothing answered after the end


def test_malformed_and_unsupported_pdus_never_raise() -> None:
    w = Wire()
    w.connect()
    w.pump()
    # undecodable bytes → FunctionNotSupported (syntaxError) with the bytes returned
    for junk in (b"\xff\xff\xff\xff\xff", b"\x00", b"", "text", None):
        w.b.receive(junk)
    fns = [asn1.decode_h245(d)[1] for _, d in w.queue]
    assert fns[0][0] == "functionNotSupported" and fns[0][1]["cause"] == ("syntaxError", 0)
    assert fns[0][1]["returnedFunction"] == b"\xff\xff\xff\xff\xff"
    w.queue.clear()
    # a request we do not support → FunctionNotUnderstood carrying it
    req = ("request", ("maintenanceLoopRequest", {"type": ("systemLoop", 0)}))
    w.b.receive(asn1.encode_h245(req))
    assert asn1.decode_h245(w.queue[-1][1])[1] == ("functionNotUnderstood", ("request", req[1]))
    # decodable but semantically broken (an OLC for a data channel without H.225.0 parameters)
    w.b.receive(asn1.encode_h245(("request", ("openLogicalChannel", {
        "forwardLogicalChannelNumber": 7,
        "forwardLogicalChannelParameters": {"dataType": ("nullData", 0), "multiplexParameters": ("none", 0)}}))))
    assert asn1.decode_h245(w.queue[-1][1])[1][0] == "openLogicalChannelReject"
    # unknown indication and unmatched responses: ignored silently
    n = len(w.queue)
    w.b.receive(asn1.encode_h245(("indication", ("jitterIndication", {
        "scope": ("wholeMultiplex", 0), "estimatedReceivedJitterMantissa": 1,
        "estimatedReceivedJitterExponent": 1}))))
    w.b.receive(asn1.encode_h245(("response", ("openLogicalChannelAck", {"forwardLogicalChannelNumber": 999}))))
    w.b.receive(asn1.encode_h245(("response", ("roundTripDelayResponse", {"sequenceNumber": 77}))))
    assert len(w.queue) == n
    # RequestMode is answered with a reject, not "not understood"
    w.b.receive(asn1.encode_h245(("request", ("requestMode", {"sequenceNumber": 3, "requestedModes": [[{
        "type": ("audioMode", ("g711Ulaw64k", 0))}]]}))))
    assert asn1.decode_h245(w.queue[-1][1])[1][0] == "requestModeReject"
    assert w.b.stats["malformed"] >= 3


# --------------------------------------------------------------------------- fast start


def test_fast_start_offer_answer_accept() -> None:
    caller = H245Session(CAT, send=lambda d: None, clock=task.Clock(), audio_codecs=("G722", "PCMU"),
                         video_codecs=("H264",))
    callee = H245Session(CAT, send=lambda d: None, clock=task.Clock(), tcs=hdx_tcs())
    offer = caller.fast_start_offer({"audio": (("10.0.0.1", 7000), ("10.0.0.1", 7001)),
                                     "video": (("10.0.0.1", 7002), ("10.0.0.1", 7003))})
    olcs = [asn1.decode_open_logical_channel(o) for o in offer]
    assert len(olcs) == 6 and len({o["forwardLogicalChannelNumber"] for o in olcs}) == 6
    fwd = [o for o in olcs if o["forwardLogicalChannelParameters"]["dataType"][0] != "nullData"]
    rev = [o for o in olcs if "reverseLogicalChannelParameters" in o]
    assert [o["forwardLogicalChannelParameters"]["dataType"][1][0] for o in fwd] == [
        "g722-64k", "g711Ulaw64k", "genericVideoCapability"]
    p = fwd[0]["forwardLogicalChannelParameters"]["multiplexParameters"][1]
    assert parse_h245_address(p["mediaControlChannel"]) == ("10.0.0.1", 7001) and "mediaChannel" not in p
    for o in rev:
        assert o["forwardLogicalChannelParameters"] == {"dataType": ("nullData", 0),
                                                        "multiplexParameters": ("none", 0)}
    rp = rev[2]["reverseLogicalChannelParameters"]["multiplexParameters"][1]
    assert parse_h245_address(rp["mediaChannel"]) == ("10.0.0.1", 7002) and rp["sessionID"] == 2

    answer, chosen = callee.fast_start_answer(offer, {"audio": (("10.0.0.2", 9000), ("10.0.0.2", 9001)),
                                                      "video": (("10.0.0.2", 9002), ("10.0.0.2", 9003))})
    assert len(answer) == 4
    assert sorted((c.direction, c.media, c.codec_name) for c in chosen) == [
        ("rx", "audio", "G722"), ("rx", "video", "H264"), ("tx", "audio", "G722"), ("tx", "video", "H264")]
    callee_tx_audio = next(c for c in chosen if c.direction == "tx" and c.media == "audio")
    assert callee_tx_audio.remote_media == ("10.0.0.1", 7000)

    got = caller.fast_start_accepted(answer)
    by = {(c.direction, c.media): c for c in got}
    assert by[("tx", "audio")].codec_name == "G722" and by[("tx", "audio")].remote_media == ("10.0.0.2", 9000)
    assert by[("tx", "audio")].remote_rtcp == ("10.0.0.2", 9001)
    assert by[("tx", "video")].remote_media == ("10.0.0.2", 9002) and by[("tx", "video")].payload_type == 96
    assert by[("rx", "audio")].local_media == ("10.0.0.1", 7000) and by[("rx", "audio")].remote_rtcp == (
        "10.0.0.2", 9001)
    assert by[("rx", "video")].number == next(c.number for c in chosen if c.direction == "tx" and c.media == "video")
    assert all(c.state == "open" and c.fast_start for c in got)
    assert set(caller.channels) == {c.key for c in got}

    from tests.test_h323_q931 import tshark_frames

    conf, call = bytes(range(16)), bytes(range(16, 32))
    setup = q931.build_setup(3, conf, call, [("h323-ID", "caller")], [("dialledDigits", "1000")],
                             None, None, offer, True)
    connect = q931.build_connect(3, conf, call, fast_start=answer)
    frames = tshark_frames([("cs", setup.encode()), ("cs", connect.encode())])
    assert "nullData" in frames[0] and "reverseLogicalChannelParameters" in frames[1]
    assert "genericVideoCapability" in frames[0] and "mediaChannel" in frames[1]


def test_fast_start_answer_refuses_what_it_cannot_do() -> None:
    caller = H245Session(CAT, send=lambda d: None, clock=task.Clock(), audio_codecs=("PCMA",), video_codecs=())
    callee = H245Session(CAT, send=lambda d: None, clock=task.Clock(), tcs=vsx_tcs())
    offer = caller.fast_start_offer({"audio": (("10.0.0.1", 7000), ("10.0.0.1", 7001))})
    assert callee.fast_start_answer(offer + [b"\x01\x02"], {"audio": (("10.0.0.2", 1), ("10.0.0.2", 2))}) == ([], [])


# --------------------------------------------------------------------------- real-world decode


def test_hdx_h264_generic_capability_decodes_to_h264_with_level() -> None:
    data = asn1.encode_h245(("request", ("terminalCapabilitySet", hdx_tcs(level=85))))
    caps = parse_capabilities(asn1.decode_h245(data)[1][1], CAT)
    h264 = next(c for c in caps if c.media == "video")
    assert (h264.codec_name, h264.params.level, h264.params.profile_idc) == ("H264", 40, 0x42)   # Level 85 = 4
    s = H245Session(CAT, send=lambda d: None, clock=task.Clock())
    s.receive(data)
    assert s.remote_tcs_received and s.choose_codec("video") == "H264" and s.choose_codec("audio") == "G722"


def test_addresses() -> None:
    assert parse_h245_address(h245_address("192.0.2.7", 5004)) == ("192.0.2.7", 5004)
    assert parse_h245_address(h245_address("2001:db8::1", 6000)) == ("2001:db8::1", 6000)
    assert parse_h245_address(("multicastAddress", ("iPAddress", {})) ) is None
    with pytest.raises(ValueError):
        h245_address("nowhere", 1)
    # deep copies of pycrate values stay encodable (no shared state with the session)
    assert asn1.decode_h245(asn1.encode_h245(copy.deepcopy(("indication", ("userInput", ("alphanumeric", "5"))))))


def test_tshark_decodes_a_whole_session() -> None:
    """Every PDU two sessions exchange (TCS with H2250Capability, MSD, OLC with H.264
    packetization, OLCAck with its extension, close, RTD, UII, commands) is clean for Wireshark."""
    from tests.test_h323_q931 import tshark_frames

    w = Wire(b_kw={"tcs": hdx_tcs(), "terminal_type": 50})
    w.connect()
    open_media(w)
    w.a.request_fast_update(rx(w.a, "video").number)
    w.a.send_flow_control(rx(w.a, "video").number, 5120)
    w.a.send_user_input("1", form="signal")
    w.b.send_user_input("#", form="alphanumeric")
    w.a.round_trip_delay()
    w.a.close_channel(tx(w.a, "audio").number)
    w.b.request_channel_close(rx(w.b, "video").number)
    w.pump()
    w.a.end_session()
    w.pump()
    call = bytes(range(16, 32))
    packets = [("cs", q931.build_facility(3, call, from_destination=True, reason=None,
                                          h245_control=[pdu]).encode()) for pdu in w.raw]
    frames = tshark_frames(packets)
    text = "\n".join(frames)
    for word in ("terminalCapabilitySetAck", "masterSlaveDeterminationAck", "openLogicalChannelAck",
                 "h2250LogicalChannelAckParameters", "mediaPacketization", "closeLogicalChannelAck",
                 "requestChannelCloseAck", "roundTripDelayResponse", "videoFastUpdatePicture",
                 "flowControlCommand", "signalType", "endSessionCommand"):
        assert word in text, word


def test_mutated_pdus_never_raise() -> None:
    """Real PDUs with bytes flipped or cut: every one is answered or ignored, none raises."""
    import random

    w = Wire(b_kw={"tcs": hdx_tcs(), "terminal_type": 50})
    w.connect()
    open_media(w)
    corpus = list(w.raw)
    rng = random.Random(245)
    victim = Wire()
    victim.connect()
    for i in range(400):
        pdu = bytearray(rng.choice(corpus))
        if i % 3 == 0:
            pdu = pdu[: rng.randrange(1, len(pdu) + 1)]
        for _ in range(rng.randrange(1, 4)):
            pdu[rng.randrange(len(pdu))] = rng.randrange(256)
        victim.a.receive(bytes(pdu))
        victim.queue.clear()
    assert victim.a.stats["received"] >= 400
