"""Floods while a meeting goes on: a real `cau run`, real callers (baresip), loopback only.

The issue's findings: 50 never-ACKed INVITEs locked a 50-seat room for 32 s, and idle TCP
connections piled up without limit. Here 5,000 never-ACKed INVITEs from 10 addresses, and
5,000 idle TCP connections from 200 addresses, arrive while two sites are in a room: a site
that joins during the flood gets in, and the two hear each other. (A flood from more than
MAX_UNCONFIRMED / 4 = 50 addresses at once can fill the pool of calls waiting for their ACK;
docs/security.md says so.)
"""
from __future__ import annotations

import json
import resource
import select
import socket
import threading
import time

from interop_tests.peers.baresip import Baresip
from interop_tests.peers.procs import wav_peak
from tests.test_run import gateway  # noqa: F401 - the fixture

PLAN = """\
version: 1
rooms:
  - id: hop
    name: "Họp huyện"
    numbers: ["3000"]
    max_participants: 50
"""


def _sip_port(gw) -> int:
    status = json.loads(gw.get("/api/status")[2])
    return int(status["listening"]["SIP"].split(":")[-1].split("/")[0])


def _invite(i: int, src: tuple[str, int], gw_port: int, sink: int) -> bytes:
    sdp = (f"v=0\r\no=flood {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio {sink} RTP/AVP 0\r\n")
    return (f"INVITE sip:3000@127.0.0.1:{gw_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src[0]}:{src[1]};rport;branch=z9hG4bKflood{i}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:flood@{src[0]}>;tag=f{i}\r\nTo: <sip:3000@127.0.0.1>\r\nCall-ID: flood-{i}@lab\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:flood@{src[0]}:{src[1]}>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


def _meeting(gw, tmp_path, during) -> tuple[float, float]:
    """Site A in room 3000; `during()` starts the flood; site B joins while it runs; both talk for
    3 s. Returns the frequencies A and B heard."""
    port = _sip_port(gw)
    a = Baresip("site-a", workdir=tmp_path / "a", audio_codecs=("PCMU/8000/1",), audio_source=("ausine", 440))
    b = Baresip("site-b", workdir=tmp_path / "b", audio_codecs=("PCMU/8000/1",), audio_source=("ausine", 1000))
    try:
        a.dial(f"sip:3000@127.0.0.1:{port}")
        a.wait_established(timeout=10)
        done = during()
        time.sleep(1.0)                               # the flood is under way
        b.dial(f"sip:3000@127.0.0.1:{port}")
        b.wait_established(timeout=15)
        done.wait(60)
        time.sleep(3.0)
        a.hangup()
        b.hangup()
        a.wait_closed(timeout=10)
        b.wait_closed(timeout=10)
        return wav_peak(a.received_audio())[0], wav_peak(b.received_audio())[0]
    finally:
        a.stop()
        b.stop()


def test_5000_never_acked_invites_do_not_keep_a_site_out_of_the_meeting(gateway, tmp_path):  # noqa: F811
    (tmp_path / "plan.yaml").write_text(PLAN)
    gw = gateway("--no-watch", "--rtp-ports", "40000-40999")
    port = _sip_port(gw)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)         # where the flood's SDP points
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    answers: dict[str, set] = {}
    reflected = [0]

    def flood() -> threading.Event:
        done = threading.Event()
        socks = []
        for n in range(10):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.1.{n + 1}", 0))
            s.setblocking(False)
            socks.append(s)

        def drain(wait: float) -> None:
            ready, _, _ = select.select(socks + [sink], [], [], wait)
            for s in ready:
                while True:
                    try:
                        data = s.recv(65535)
                    except BlockingIOError:
                        break
                    if s is sink:
                        reflected[0] += len(data)
                    elif data.startswith(b"SIP/2.0 "):
                        code = data[8:11].decode()
                        call_id = data.split(b"Call-ID: ", 1)[-1].split(b"\r\n", 1)[0]
                        if code[0] != "1":
                            answers.setdefault(code, set()).add(call_id)

        def run() -> None:
            try:
                t0 = time.monotonic()
                for i in range(5000):                    # 1,000 a second, 500 from each address
                    s = socks[i % 10]
                    s.sendto(_invite(i, s.getsockname(), port, sink.getsockname()[1]), ("127.0.0.1", port))
                    if i % 20 == 19:
                        while (left := t0 + (i + 1) / 1000 - time.monotonic()) > 0:
                            drain(left)
                        drain(0)
                end = time.monotonic() + 3
                while time.monotonic() < end:
                    drain(0.1)
            finally:
                for s in socks:
                    s.close()
                done.set()
        threading.Thread(target=run, daemon=True).start()
        return done

    try:
        heard_a, heard_b = _meeting(gw, tmp_path, flood)
    finally:
        sink.close()
    assert abs(heard_a - 1000) < 20, f"site A heard {heard_a:.0f} Hz, not site B's 1000 Hz"
    assert abs(heard_b - 440) < 20, f"site B heard {heard_b:.0f} Hz, not site A's 440 Hz"
    counts = {code: len(ids) for code, ids in answers.items()}
    status = json.loads(gw.get("/api/status")[2])
    print("flood answers:", counts, "media clock:", status["media"]["clock"])
    assert counts.get("503", 0) > 4500, counts              # refused at once, with Retry-After
    assert counts.get("200", 0) <= 40, counts               # at most 4 waiting per address
    assert set(counts) <= {"200", "503"}, counts
    # the loop was never held long: the room's audio went on
    assert status["media"]["clock"]["late_over_100ms"] == 0, status["media"]["clock"]
    # no reflection: before an ACK at most half a second of audio goes to the address an SDP names
    assert reflected[0] <= counts.get("200", 0) * 26 * 172, (reflected[0], counts)
    log = gw.stderr.read_text()
    assert log.count("SIP INVITE refused") < 50, "each refusal of the flood logged a line"
    assert gw.stop() == 0


def test_5000_idle_tcp_connections_do_not_keep_a_site_out_of_the_meeting(gateway, tmp_path):  # noqa: F811
    (tmp_path / "plan.yaml").write_text(PLAN)
    gw = gateway("--no-watch", "--rtp-ports", "40000-40999", fd_limit=4096)
    port = _sip_port(gw)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
    conns: list[socket.socket] = []
    tcp: dict = {}

    def flood() -> threading.Event:
        done = threading.Event()

        def run() -> None:
            try:
                for i in range(5000):                    # 25 from each of 200 addresses
                    s = socket.socket()
                    s.setblocking(False)
                    s.bind((f"127.0.2.{i % 200 + 1}", 0))
                    s.connect_ex(("127.0.0.1", port))
                    conns.append(s)
                    if i % 100 == 99:
                        time.sleep(0.01)
                time.sleep(1.0)
                tcp.update(json.loads(gw.get("/api/status")[2])["tcp"]["SIP"])
            finally:
                done.set()
        threading.Thread(target=run, daemon=True).start()
        return done

    try:
        heard_a, heard_b = _meeting(gw, tmp_path, flood)
        status = json.loads(gw.get("/api/status")[2])            # the HTTP side answers too
    finally:
        for s in conns:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert abs(heard_a - 1000) < 20, f"site A heard {heard_a:.0f} Hz, not site B's 1000 Hz"
    assert abs(heard_b - 440) < 20, f"site B heard {heard_b:.0f} Hz, not site A's 440 Hz"
    assert tcp and tcp["open"] <= tcp["max"] and tcp["refused"] > 0, tcp   # SIP's share filled, no more
    assert status["fd_limit"] == 4096
    assert gw.stop() == 0
