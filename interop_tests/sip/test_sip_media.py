"""Media cases for any SIP user agent or MCU: once the call is up, the target's RTP is what its answer
promised — the payload type it agreed, the packet time the offer asked for, one stream with a steady
clock (RFC 3550 §5.1, RFC 3264 §5.1 and §6.1, RFC 3551 §4.5, RFC 4566 §6 ptime). The suite's RTP peer
(interop_tests.peers.rtp_participant: PyAV codecs, aiortc's packet parser) receives it and sends a
tone back, so a target that waits for media before it sends (symmetric RTP) gets some."""
from __future__ import annotations

import asyncio
import os
import re
import socket
import time

import numpy as np

from interop_tests import evidence
from interop_tests.peers.rtp_participant import RtpParticipant
from interop_tests.verdicts import not_applicable

OFFER_PTIME = 20


def _loop() -> asyncio.AbstractEventLoop:
    from gateway import loop as _l

    return _l.install()


class UdpDialog:
    """A minimal UAC over UDP for one call (INVITE → final → ACK, BYE), with Timer A retransmissions."""

    def __init__(self, target, number: str | None = None) -> None:
        self.t = target
        self.number = number or target.room
        self.me = "127.0.0.1" if target.host.startswith("127.") else socket.gethostbyname(socket.gethostname())
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.me if self.me.startswith("127.") else "", 0))
        self.port = self.sock.getsockname()[1]
        self.call_id = f"media-{os.urandom(6).hex()}@{self.me}"
        self.tag = os.urandom(4).hex()
        self.to = f"<sip:{self.number}@{target.host}>"
        self.remote_target = self.request_uri = f"sip:{self.number}@{target.host}:{target.sip_port}"
        self.cseq = 1

    def _request(self, method: str, cseq: int, body: str = "", branch: str | None = None) -> bytes:
        branch = branch or "z9hG4bK" + os.urandom(8).hex()
        # the first INVITE goes to the number; everything after it in the dialog to the target's Contact
        uri = self.request_uri if method == "INVITE" and cseq == 1 else self.remote_target
        head = (f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.me}:{self.port};rport;branch={branch}\r\nMax-Forwards: 70\r\n"
                f"From: <sip:lab@{self.me}>;tag={self.tag}\r\nTo: {self.to}\r\nCall-ID: {self.call_id}\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:lab@{self.me}:{self.port}>\r\nUser-Agent: cau-conformance\r\n")
        if body:
            head += "Content-Type: application/sdp\r\n"
        return (head + f"Content-Length: {len(body.encode())}\r\n\r\n{body}").encode()

    def _final(self, data: bytes, cseq: int, method: str, timeout: float = 12.0) -> str:
        deadline, interval, next_send, provisional = time.monotonic() + timeout, 0.5, 0.0, False
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send and not provisional:
                self.sock.sendto(data, (self.t.host, self.t.sip_port))
                next_send, interval = time.monotonic() + interval, min(interval * 2, 4.0)
            self.sock.settimeout(max(0.01, min(next_send, deadline) - time.monotonic()) if not provisional
                                 else max(0.01, deadline - time.monotonic()))
            try:
                text = self.sock.recv(65535).decode("utf-8", "replace")
            except OSError:
                continue
            if not re.search(rf"(?im)^CSeq:\s*{cseq}\s+{method}\s*$", text):
                continue
            m = re.match(r"SIP/2\.0 (\d{3})", text)
            if not m:
                continue
            if int(m.group(1)) < 200:
                provisional = True          # Timer A stops (RFC 3261 §17.1.1.2)
                continue
            return text
        raise AssertionError(f"no final answer to {method} within {timeout:.0f} s")

    def invite(self, sdp: str) -> str:
        answer = self._final(self._request("INVITE", 1, sdp, branch="z9hG4bKinv" + os.urandom(6).hex()), 1, "INVITE")
        to = re.search(r"(?im)^(?:To|t):\s*(.+)$", answer)
        if to:
            self.to = to.group(1).strip()
        contact = re.search(r"(?im)^(?:Contact|m):\s*<?([^>;\r\n]+)", answer)
        if answer.startswith("SIP/2.0 2") and contact:
            self.remote_target = contact.group(1).strip()
            self.sock.sendto(self._request("ACK", 1), (self.t.host, self.t.sip_port))
        return answer

    def in_dialog(self, method: str, body: str = "", timeout: float = 12.0) -> str:
        """A request in the dialog with the next CSeq (RFC 3261 §12.2.1.1); a 2xx to a re-INVITE is ACKed."""
        self.cseq += 1
        answer = self._final(self._request(method, self.cseq, body), self.cseq, method, timeout)
        if method == "INVITE" and answer.startswith("SIP/2.0 2"):
            self.sock.sendto(self._request("ACK", self.cseq), (self.t.host, self.t.sip_port))
        return answer

    def bye(self) -> None:
        try:
            self.in_dialog("BYE", timeout=6.0)
        except AssertionError:
            pass

    def close(self) -> None:
        self.sock.close()


def _answer_media(answer: str) -> dict:
    body = answer.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in answer else ""
    c = re.search(r"(?m)^c=IN IP[46] (\S+)", body)
    m = re.search(r"(?m)^m=audio (\d+) [\w/]+ ([\d ]+)", body)
    if not (c and m):
        raise AssertionError(f"the 200's SDP has no usable audio: {body[:400]!r}")
    rtpmap = {int(pt): name for pt, name in re.findall(r"(?m)^a=rtpmap:(\d+) ([\w.-]+/\d+)", body)}
    pts = [int(x) for x in m.group(2).split()]
    direction = next((d for d in ("sendonly", "recvonly", "inactive") if re.search(rf"(?m)^a={d}\s*$", body)),
                     "sendrecv")
    return {"host": c.group(1), "port": int(m.group(1)), "pts": pts, "rtpmap": rtpmap, "direction": direction}


def test_the_answers_audio_has_the_agreed_payload_type_and_packet_time(target, sip_caps):
    if sip_caps.status is None and not target.is_local_cau:
        not_applicable("the target did not answer OPTIONS: no SIP system at that address")
    loop = _loop()
    peer = RtpParticipant("PCMU", host="127.0.0.1" if target.host.startswith("127.") else "0.0.0.0")
    rtp_port = loop.run_until_complete(peer.start())
    d = UdpDialog(target)
    try:
        me = d.me
        sdp = (f"v=0\r\no=lab 1 1 IN IP4 {me}\r\ns=-\r\nc=IN IP4 {me}\r\nt=0 0\r\n"
               f"m=audio {rtp_port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
               f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:{OFFER_PTIME}\r\na=sendrecv\r\n")
        answer = d.invite(sdp)
        status = int(answer.split(" ", 2)[1])
        assert status == 200, f"the call was answered {answer.splitlines()[0]}"
        media = _answer_media(answer)
        if media["direction"] in ("recvonly", "inactive") or media["port"] == 0:
            not_applicable(f"the answer's audio is {media['direction'] if media['port'] else 'refused (port 0)'}: "
                           "the target sends no audio in this call")
        agreed = [pt for pt in media["pts"] if pt in (0, 8)]
        assert agreed, f"the answer's formats {media['pts']} have neither PCMU (0) nor PCMA (8) of the offer"
        peer.set_remote(media["host"], media["port"])
        peer.play_tone(1000)
        peer.start_sending()

        async def listen() -> None:
            deadline = loop.time() + 8.0
            while loop.time() < deadline and sum(1 for p in peer.packet_log if p[1] in agreed) < 150:
                await asyncio.sleep(0.1)

        loop.run_until_complete(listen())
        peer.stop_sending()
    finally:
        d.bye()
        d.close()
        peer.close()
    log = peer.packet_log
    main = [p for p in log if p[1] in agreed]
    evidence.measure("RTP packets received from the target", len(log), "", "≥ 50 in 8 s")
    assert len(main) >= 50, (f"{len(log)} RTP packets came from the target in 8 s, {len(main)} of the agreed "
                             f"format (payload types {sorted({p[1] for p in log})})")
    others = sorted({p[1] for p in log} - set(media["pts"]))
    assert not others, f"RTP with payload types {others}, not in the answer {media['pts']}"
    assert len(peer.stats.ssrcs) == 1, f"{len(peer.stats.ssrcs)} SSRCs in one stream"
    steps = [(b[3] - a[3]) & 0xFFFFFFFF for a, b in zip(main, main[1:]) if (b[2] - a[2]) & 0xFFFF == 1]
    step = int(np.median(steps))
    intervals = [(b[0] - a[0]) * 1000 for a, b in zip(main, main[1:])]
    evidence.measure("payload type", main[-1][1], "", f"one of {agreed}")
    evidence.measure("timestamp step", step, "samples", f"{8000 * OFFER_PTIME // 1000} (a=ptime:{OFFER_PTIME} of the offer)")
    evidence.measure("packet interval (median)", round(float(np.median(intervals)), 1), "ms",
                     f"about {OFFER_PTIME}", series=[(b[0] - main[0][0], iv) for b, iv in zip(main[1:], intervals)])
    assert sum(1 for s in steps if s == step) >= 0.9 * len(steps), f"timestamp steps vary: {sorted(set(steps))[:12]}"
    assert step == 8000 * OFFER_PTIME // 1000, f"packet time {step / 8} ms, expected {OFFER_PTIME} ms (a=ptime of the offer)"
    assert 0.7 * OFFER_PTIME < float(np.median(intervals)) < 1.3 * OFFER_PTIME, \
        f"packets every {np.median(intervals):.1f} ms for {OFFER_PTIME} ms of audio each"


def _answer_video(answer: str) -> dict | None:
    body = answer.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in answer else ""
    sections = re.split(r"(?m)^(?=m=)", body)
    c_all = re.search(r"(?m)^c=IN IP[46] (\S+)", sections[0])
    for sec in sections[1:]:
        m = re.match(r"m=video (\d+) [\w/]+ ([\d ]+)", sec)
        if not m:
            continue
        c = re.search(r"(?m)^c=IN IP[46] (\S+)", sec) or c_all
        rtpmap = {int(pt): name.split("/")[0] for pt, name in re.findall(r"(?m)^a=rtpmap:(\d+) ([\w.-]+/\d+)", sec)}
        pts = [int(x) for x in m.group(2).split()]
        return {"host": c.group(1) if c else None, "port": int(m.group(1)), "pts": pts, "rtpmap": rtpmap,
                "direction": next((d for d in ("sendonly", "recvonly", "inactive")
                                   if re.search(rf"(?m)^a={d}\s*$", sec)), "sendrecv")}
    return None


class VideoCall:
    """A call with audio and video to the target's video room, as the video cases make it: the offer
    (H.264 Constrained Baseline in mode 1 and mode 0, VP8; NACK, PLI and FIR feedback), the answer
    read, and the suite's video peer (PyAV) configured to the format the target chose."""

    def __init__(self, target, colour: tuple[int, int, int]) -> None:
        from interop_tests.peers.video_peer import VideoPeer, solid

        self.loop = _loop()
        host = "127.0.0.1" if target.host.startswith("127.") else "0.0.0.0"
        self.audio = RtpParticipant("PCMU", host=host)
        self.aport = self.loop.run_until_complete(self.audio.start())
        self.video = VideoPeer(None, picture=solid(colour, 352, 288), size=(352, 288), host=host)
        self.d = UdpDialog(target, target.video_room)
        self.answer = ""
        self.name = ""

    def start(self) -> dict | None:
        """INVITE and, when the answer takes video (its video section is returned either way; None
        without one), send and receive it in the chosen format."""
        from interop_tests.peers.video_peer import video_format

        me = self.d.me
        sdp = (f"v=0\r\no=lab 1 1 IN IP4 {me}\r\ns=-\r\nc=IN IP4 {me}\r\nt=0 0\r\n"
               f"m=audio {self.aport} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
               f"m=video {self.video.port} RTP/AVP 96 98 97\r\nb=AS:1000\r\na=rtpmap:96 H264/90000\r\n"
               "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\na=rtpmap:98 H264/90000\r\n"
               "a=fmtp:98 profile-level-id=42e01f;packetization-mode=0\r\na=rtpmap:97 VP8/90000\r\n"
               "a=rtcp-fb:* nack pli\r\na=rtcp-fb:* ccm fir\r\na=sendrecv\r\n")
        self.answer = self.d.invite(sdp)
        assert self.answer.startswith("SIP/2.0 200"), f"the call with video was answered {self.answer.splitlines()[0]}"
        v = _answer_video(self.answer)
        if v is None or v["port"] == 0 or v["direction"] in ("recvonly", "inactive"):
            return v
        chosen = [pt for pt in v["pts"] if pt in (96, 97, 98)]
        assert chosen, (f"the answer's video formats {v['pts']} are none of the offer's (96 H.264 mode 1, "
                        "98 H.264 mode 0, 97 VP8)")
        self.name = "VP8" if chosen[0] == 97 else "H264"
        fmt = video_format(self.name, chosen[0], mode=0 if chosen[0] == 98 else 1)
        self.video.configure(fmt, fmt)
        self.video.start(v["port"], v["host"])
        self.audio.set_remote(*(_answer_media(self.answer)[k] for k in ("host", "port")))
        self.audio.play_tone(500)
        self.audio.start_sending()
        return v

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.d.bye()
        self.d.close()
        self.audio.close()
        self.loop.run_until_complete(_maybe(self.video.stop()))


def test_a_target_that_takes_video_sends_frames_that_decode(target, sip_caps):
    """Offer audio and video (H.264 Constrained Baseline in mode 1 and mode 0, VP8); when the answer takes video,
    the frames the target sends must decode (FFmpeg) at a sensible size and rate."""
    if sip_caps.status is None and not target.is_local_cau:
        not_applicable("the target did not answer OPTIONS: no SIP system at that address")
    call = VideoCall(target, (30, 40, 220))
    video = call.video
    try:
        v = call.start()
        if v is None or v["port"] == 0:
            not_applicable("the target declined video in its answer (no m=video, or port 0)")
        if v["direction"] in ("recvonly", "inactive"):
            not_applicable(f"the target's video is {v['direction']}: it sends none")

        async def watch() -> None:
            deadline = call.loop.time() + 12.0
            while call.loop.time() < deadline and video.decoded < 30:
                await asyncio.sleep(0.1)

        call.run(watch())
    finally:
        call.close()
    name = call.name
    evidence.measure("video frames decoded", video.decoded, "", "≥ 10 in 12 s")
    evidence.measure("video codec", name, "", "H264 or VP8, as offered")
    assert video.decoded >= 10, (f"{video.decoded} {name} frames decoded in 12 s "
                                 f"({video.keyframes_received} keyframes received, {video.plis_sent} PLIs sent)")
    h, w = video.last.shape[:2]
    evidence.picture(video.last, f"what-the-target-sent-{name}")
    evidence.measure("picture mean colour (RGB)", " ".join(str(int(x)) for x in video.last.reshape(-1, 3).mean(axis=0)))
    evidence.measure("picture size", f"{w}x{h}", "", "at least 128x96")
    times = [t for t, _ in video.frames]
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    evidence.measure("frame rate", round(rate, 1), "fps", "≥ 5")
    assert w >= 128 and h >= 96, f"pictures of {w}x{h}"
    assert rate >= 5, f"{rate:.1f} frames a second"


async def _maybe(x):
    if x is not None and hasattr(x, "addCallback"):
        await x.asFuture(asyncio.get_event_loop())
    elif asyncio.iscoroutine(x):
        await x


def test_a_target_sending_video_answers_a_picture_loss_indication_with_a_keyframe(target, sip_caps):
    """RTCP PLI (RFC 4585 §6.3.1) is how a receiver asks for a new picture after a loss: the target
    must send a keyframe soon after one. NOT APPLICABLE when it declines video or does not take the
    feedback (no a=rtcp-fb pli/nack pli in its answer and no keyframe)."""
    if sip_caps.status is None and not target.is_local_cau:
        not_applicable("the target did not answer OPTIONS: no SIP system at that address")
    call = VideoCall(target, (30, 200, 30))
    video = call.video
    video.nack = False
    intra_after = None
    try:
        v = call.start()
        if v is None or v["port"] == 0 or v["direction"] in ("recvonly", "inactive"):
            not_applicable("the target sends no video in this call (its answer declines it)")

        async def ask() -> float | None:
            loop = call.loop
            deadline = loop.time() + 12.0
            while loop.time() < deadline and video.decoded < 10:
                await asyncio.sleep(0.1)
            if video.decoded < 10:
                return None
            await asyncio.sleep(1.0)                  # past the first keyframes
            before, asked = video.keyframes_received, loop.time()
            video.session.send_pli()
            while loop.time() < asked + 3 and video.keyframes_received == before:
                await asyncio.sleep(0.02)
            return loop.time() - asked if video.keyframes_received > before else None

        intra_after = call.run(ask())
        feedback = re.findall(r"(?m)^a=rtcp-fb:(\S+) (.+)$", call.answer)
    finally:
        call.close()
    evidence.measure("video frames decoded before the PLI", video.decoded, "", "≥ 10")
    assert video.decoded >= 10, f"{video.decoded} {call.name} frames decoded in 12 s: no picture to repair"
    evidence.measure("keyframe after PLI", round(intra_after * 1000) if intra_after else "none", "ms", "within 3000")
    if intra_after is None and not any("pli" in f[1] for f in feedback):
        not_applicable(f"its answer takes no PLI feedback (a=rtcp-fb: {feedback or 'none'}) and it sent no keyframe")
    assert intra_after is not None, f"no keyframe within 3 s of an RTCP PLI (its answer's a=rtcp-fb: {feedback})"
