"""The operator's console in headless Chromium (Debian's chromium through Playwright), with real
sites in the room: two baresips (one registered, with a red camera and a 440 Hz voice; one with a
blue camera), a sipp call playing 1 kHz, and the H.323 test endpoint, which listens and records
what the room sends it. Everything the operator does is a click on the page.

And the live stream itself: ``/api/events`` delivers a join within a second, and the mute, the
state of the endpoints and the leave."""
from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.catalogue import default_catalogue
from gateway.media.codecs import MediaFormat, h264
from gateway.media.layout import LAYOUTS
from interop_tests.peers.baresip import Baresip
from interop_tests.peers.baresip_video import cell_colour, clip, last_picture, received_rtp, silence
from interop_tests.peers.browser import chromium_path
from interop_tests.peers.capture import LoopbackCapture
from interop_tests.peers.rtp_participant import band_level_db
from interop_tests.peers.sipp import Sipp
from tests.conftest import LOOP
from tests.test_run import REPO, gateway  # noqa: F401 - the fixture

RED, BLUE = (220, 30, 30), (30, 40, 220)
PLAN = """\
version: 1
rooms:
  - id: giao-ban
    name: "Họp giao ban tuần"
    numbers: ["1000"]
    layout: cp-2x2
    video: {codecs: [H264]}
endpoints:
  - {alias: ubnd-huyen-01, name: "UBND huyện Đông Hải", number: "5100", protocol: h323, group: huyen-01}
  - {alias: xa-an-binh, name: "UBND xã An Bình", number: "5101", protocol: sip, password: "mat-khau-5101", group: huyen-01}
  - {alias: xa-tan-loc, name: "UBND xã Tân Lộc", number: "5102", protocol: sip, password: "mat-khau-5102", group: huyen-01}
  - {alias: xa-phu-my, name: "UBND xã Phú Mỹ", number: "5201", protocol: sip, password: "mat-khau-5201", group: huyen-02}
"""


def _ports(gw) -> dict[str, int]:
    listening = json.loads(gw.get("/api/status")[2])["listening"]
    return {k: int(v.split(":")[-1].split("/")[0]) for k, v in listening.items()}


def _roster(gw) -> list[dict]:
    return [p for r in json.loads(gw.get("/api/status")[2])["rooms"] for p in r["roster"]]


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class EventStream:
    """``/api/events`` read by a plain socket: the events, each with the time it arrived."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Accept: text/event-stream\r\n\r\n"
                          .encode())
        self.events: list[tuple[float, str, dict]] = []
        self.head = b""
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        self.sock.settimeout(None)
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            if not self.head:
                if b"\r\n\r\n" not in buf:
                    continue
                self.head, buf = buf.split(b"\r\n\r\n", 1)
            # chunked transfer: strip the chunk-size lines (the events never contain a bare hex line)
            text = buf.decode("utf-8", "replace")
            while "\n\n" in text:
                block, text = text.split("\n\n", 1)
                lines = [ln for ln in block.split("\n") if not re.fullmatch(r"[0-9a-fA-F]+\r?", ln)]
                ev = next((ln[6:].strip() for ln in lines if ln.startswith("event:")), None)
                data_lines = [ln[5:].strip() for ln in lines if ln.startswith("data:")]
                if ev and data_lines:
                    with self._cond:
                        self.events.append((time.monotonic(), ev, json.loads("\n".join(data_lines))))
                        self._cond.notify_all()
            buf = text.encode()

    def wait(self, event: str, pred=lambda d: True, timeout: float = 10.0) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, ev, data in self.events:
                    if ev == event and pred(data):
                        return at, data
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {event} event within {timeout} s; got "
                                         f"{[e for _, e, _ in self.events][-20:]}")
                self._cond.wait(left)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def test_the_event_stream_delivers_a_join_within_a_second_and_the_rest(gateway, tmp_path):  # noqa: F811
    (tmp_path / "plan.yaml").write_text(PLAN)
    gw = gateway("--no-watch", "--rtp-ports", "45000-45199")
    ports = _ports(gw)
    stream = EventStream(gw.port)
    a = Baresip("xa-an-binh", workdir=tmp_path / "a", audio_codecs=("PCMU/8000/1",),
                register_to=(f"127.0.0.1:{ports['SIP']}", "xa-an-binh", "mat-khau-5101"))
    try:
        _, snap = stream.wait("snapshot")
        states = {e["alias"]: e["state"] for g in snap["endpoints"]["groups"] for e in g["endpoints"]}
        assert states == {"ubnd-huyen-01": "offline", "xa-an-binh": "offline", "xa-tan-loc": "offline",
                          "xa-phu-my": "offline"}
        assert [g["id"] for g in snap["endpoints"]["groups"]] == ["huyen-01", "huyen-02"]
        assert a.registered(timeout=10)
        stream.wait("endpoints", lambda d: any(e["alias"] == "xa-an-binh" and e["state"] == "registered"
                                               for e in d["changed"]), timeout=5)
        a.dial(f"sip:1000@127.0.0.1:{ports['SIP']}")
        a.wait_established(timeout=10)
        established = time.monotonic()
        at, joined = stream.wait("joined", timeout=5)
        assert joined["room"] == "giao-ban" and joined["participant"]["identity"] == "xa-an-binh"
        assert at - established < 1.0, f"the join came {at - established:.2f} s after the call was up"
        assert joined["participant"]["audio"] == "PCMU"
        stream.wait("endpoints", lambda d: any(e["alias"] == "xa-an-binh" and e["state"] == "in_call"
                                               for e in d["changed"]), timeout=5)
        _, q = stream.wait("quality", lambda d: "giao-ban" in d["rooms"], timeout=5)
        leg = joined["participant"]["id"]
        assert q["rooms"]["giao-ban"][leg]["quality"]["rx"]["packets"] > 0
        # the operator mutes it (the API): the stream says so
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/api/rooms/giao-ban/participants/{leg}/mute",
                                     data=b'{"direction": "in"}', method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {gw.token}"})
        urllib.request.urlopen(req, timeout=5).read()
        stream.wait("muted", lambda d: d["id"] == leg and d["muted"] is True, timeout=2)
        a.hangup()
        a.wait_closed(timeout=10)
        stream.wait("left", lambda d: d["id"] == leg, timeout=5)
    finally:
        stream.close()
        a.stop()
    assert gw.stop() == 0


def test_the_https_port_shows_the_console_but_reads_the_roster_only_with_the_token(gateway):  # noqa: F811
    import ssl
    import urllib.error
    import urllib.request

    gw = gateway("--no-watch")
    status = json.loads(gw.get("/api/status")[2])
    https = int(status["listening"]["HTTPS"].split(":")[-1].split("/")[0])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def get(path: str, token: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(f"https://127.0.0.1:{https}{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    code, page = get("/console/")
    assert code == 200 and b"console.js" in page
    assert get("/console/vendor/uplot/uPlot.iife.min.js")[0] == 200
    assert get("/api/status")[0] == 401 and get("/api/endpoints")[0] == 401 and get("/api/events")[0] == 401
    assert get("/api/status", "wrong-token-wrong-token")[0] == 401
    code, body = get("/api/endpoints", gw.token)
    assert code == 200 and "groups" in json.loads(body)
    assert gw.stop() == 0


def _h323_listener(tmp_path: Path, port: int, record: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "interop_tests.h323.endpoint", "--call", "1000", "--to",
                             f"127.0.0.1:{port}", "--alias", "phong-hop-tinh", "--no-fast-start", "--seconds", "90",
                             "--record", str(record)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def _level(pcm: np.ndarray, rate: int, freq: float) -> float:
    return band_level_db(pcm.astype(np.float64), rate, freq)


def test_the_operator_runs_a_meeting_from_the_console(gateway, tmp_path):  # noqa: F811
    (tmp_path / "plan.yaml").write_text(PLAN)
    gw = gateway("--no-watch", "--rtp-ports", "46000-46199")
    ports = _ports(gw)
    sip = ports["SIP"]
    h323 = ports["H.323 call signalling"]
    red = clip(tmp_path / "red.avi", RED)
    blue = clip(tmp_path / "blue.avi", BLUE)
    a = Baresip("xa-an-binh", workdir=tmp_path / "a", audio_codecs=("PCMU/8000/1",), video_codecs=("H264",),
                audio_source=("ausine", 440), video_source=("avformat", str(red)),
                register_to=(f"127.0.0.1:{sip}", "xa-an-binh", "mat-khau-5101"))
    b = Baresip("khach", workdir=tmp_path / "b", audio_codecs=("PCMU/8000/1",), video_codecs=("H264",),
                audio_source=("aufile", str(silence(tmp_path / "quiet.wav"))), video_source=("avformat", str(blue)))
    sipp = Sipp(tmp_path / "sipp")
    sipp_result: dict = {}
    record = tmp_path / "h323-heard.wav"
    listener = None
    pcap = tmp_path / "video.pcapng"
    shots = tmp_path / "shots"
    shots.mkdir()
    try:
        assert a.registered(timeout=10)
        a.dial(f"sip:1000@127.0.0.1:{sip}")
        a.wait_established(timeout=10)
        time.sleep(0.8)                                          # a: the first tile
        capture = LoopbackCapture(f"udp portrange {b.rtp_lo}-{b.rtp_hi}", pcap).__enter__()   # from b's first key frame
        b.dial(f"sip:1000@127.0.0.1:{sip}")
        b.wait_established(timeout=10)
        t = threading.Thread(target=lambda: sipp_result.update(r=sipp.uac(
            f"127.0.0.1:{sip}", "uac_audio_until_bye", service="1000", call_ms=60000, timeout=90)), daemon=True)
        t.start()
        listener = _h323_listener(tmp_path, h323, record)
        _wait(lambda: len(_roster(gw)) == 4, 20, "four participants")
        rows = {p["name"]: p for p in _roster(gw)}
        leg_a = next(p["id"] for p in rows.values() if p["identity"] == "xa-an-binh")
        leg_sipp = next(p["id"] for p in rows.values() if p["name"] == "sipp")
        leg_h323 = next(p["id"] for p in rows.values() if p["protocol"] == "h323")

        async def drive() -> dict:
            from playwright.async_api import async_playwright

            out: dict = {"console": []}
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                                   args=["--no-sandbox", "--disable-gpu"])
                page = await browser.new_page(viewport={"width": 1400, "height": 1000}, locale="vi-VN")
                page.on("console", lambda m: out["console"].append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: out["console"].append(f"pageerror: {e}"))
                await page.goto(f"http://127.0.0.1:{gw.port}/console/")
                await page.wait_for_selector("#live.on", timeout=10000)
                await page.wait_for_function("() => document.querySelectorAll('table.roster tbody tr').length === 4",
                                             timeout=10000)
                out["lang"] = await page.evaluate("document.documentElement.lang")
                out["heading"] = await page.inner_text("#rooms-panel h2")
                out["rows"] = await page.eval_on_selector_all(
                    "table.roster tbody tr", "rs => Object.fromEntries(rs.map(r => [r.dataset.id, [...r.children].map(c => c.innerText)]))")
                out["offline"] = await page.eval_on_selector_all("li.site.offline", "ls => ls.map(l => l.innerText)")
                out["in_call"] = await page.eval_on_selector_all("li.site.in_call", "ls => ls.map(l => l.innerText)")
                # the token, as the operator types it
                await page.click("#token-button")
                await page.fill("#token-input", gw.token)
                await page.click("#token-form button[type=submit]")
                await page.wait_for_selector("#live.on", timeout=10000)
                row_a = page.locator(f"tr[data-id='{leg_a}']")
                await row_a.locator("button.chart").click()
                await page.wait_for_selector("figure.chart canvas", timeout=5000)
                await asyncio.sleep(2.5)                      # a live point or two on the chart
                await page.screenshot(path=str(shots / "console-vi.png"), full_page=True)
                out["t_mute"] = time.monotonic()
                await row_a.locator("button.mute-in").click()
                await page.wait_for_selector(f"tr[data-id='{leg_a}'] .badge.muted", timeout=3000)
                # the layout: the page's select, as the operator picks it
                out["t_layout"] = time.time()
                await page.select_option("select.layout", "cp-3x3")
                await asyncio.sleep(3.5)
                await page.click("#lang")
                await page.wait_for_function("() => document.documentElement.lang === 'en'")
                out["heading_en"] = await page.inner_text("#rooms-panel h2")
                await page.screenshot(path=str(shots / "console-en.png"), full_page=True)
                page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
                sipp_row = page.locator(f"tr[data-id='{leg_sipp}']")
                out["t_remove_sipp"] = time.monotonic()
                await sipp_row.locator("button.remove").click()
                await page.wait_for_function("() => document.querySelectorAll('table.roster tbody tr').length === 3",
                                             timeout=10000)
                await asyncio.sleep(2.0)
                await page.locator(f"tr[data-id='{leg_h323}']").locator("button.remove").click()
                await page.wait_for_function("() => document.querySelectorAll('table.roster tbody tr').length === 2",
                                             timeout=10000)
                await browser.close()
            return out

        try:
            out = LOOP.run_until_complete(drive())   # the suite's one loop (asyncio.run would unset it)
        finally:
            capture.__exit__(None, None, None)
        t.join(timeout=20)
        listener_out, _ = listener.communicate(timeout=20)
    finally:
        for p in (a, b):
            p.stop()
        if listener is not None and listener.poll() is None:
            listener.kill()
            listener.wait()
        sipp.close()
    assert not [c for c in out["console"] if c.startswith("pageerror")], out["console"]
    # Vietnamese first, English one click away
    assert out["lang"] == "vi" and out["heading"] == "Phòng họp" and out["heading_en"] == "Rooms"
    # every site in the room, with what it speaks
    by_leg = out["rows"]
    assert set(by_leg) == {p["id"] for p in rows.values()}, by_leg
    assert by_leg[leg_a][0].strip().startswith("UBND xã An Bình"), by_leg[leg_a]    # the plan's name for it
    assert "PCMU" in by_leg[leg_a][2] and "H264" in by_leg[leg_a][3] and "×" in by_leg[leg_a][3], by_leg[leg_a]
    assert "PCMU" in by_leg[leg_sipp][2] and by_leg[leg_sipp][1] == "sip", by_leg[leg_sipp]
    assert by_leg[leg_h323][1] == "h323" and by_leg[leg_h323][2] not in ("", "—"), by_leg[leg_h323]
    assert re.search(r"\d\.\d\d", by_leg[leg_a][5]), by_leg[leg_a][5]     # a MOS figure
    # the plan's sites: the registered commune in the call, the others listed as not connected
    assert any("UBND xã An Bình" in s for s in out["in_call"]), out["in_call"]
    assert sorted(s.split(" 5")[0].strip() for s in out["offline"]) == ["UBND huyện Đông Hải", "UBND xã Phú Mỹ",
                                                                 "UBND xã Tân Lộc"], out["offline"]
    # "remove": sipp got its BYE (the scenario fails without it), the H.323 system its ReleaseComplete
    assert sipp_result["r"].ok, sipp_result["r"].explain()
    assert "released by the far end: cause" in listener_out, listener_out[-2000:]
    # "mute": the H.323 listener stopped hearing the commune's 440 Hz; sipp's 1 kHz went on
    with wave.open(str(record)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    end = len(pcm) / rate
    before = pcm[int(1.0 * rate):int(3.0 * rate)]
    muted = pcm[int((end - 4.5) * rate):int((end - 2.6) * rate)]   # after the mute, sipp still in the room
    assert _level(before, rate, 440) > -35, f"before the mute the room did not carry 440 Hz ({_level(before, rate, 440):.1f} dB)"
    assert _level(muted, rate, 440) < -50, f"the muted site is still heard ({_level(muted, rate, 440):.1f} dB)"
    assert _level(muted, rate, 1000) > -35, f"sipp's tone went too ({_level(muted, rate, 1000):.1f} dB)"
    # the layout: what b receives changes from 2x2 tiles to 3x3 tiles
    cat = default_catalogue()
    streams = received_rtp(pcap, b.rtp_lo, b.rtp_hi)
    video = {pt: p for pt, p in streams.items() if pt not in (0, 101, 13)}
    assert len(video) == 1, sorted(streams)
    pt, packets = next(iter(video.items()))
    fmt = MediaFormat(cat.get("H264"), pt, h264.from_fmtp(cat.get("H264"), {}))
    early = received_rtp(pcap, b.rtp_lo, b.rtp_hi, before=out["t_layout"])
    pic2, n2 = last_picture(fmt, next(iter({k: v for k, v in early.items() if k == pt}.values())))
    pic3, n3 = last_picture(fmt, packets)
    assert pic2 is not None and pic3 is not None and n2 > 5 and n3 > n2, (n2, n3)
    two, three = LAYOUTS["cp-2x2"], LAYOUTS["cp-3x3"]

    def tiles(picture, cells, colour) -> list[int]:
        return [i for i, c in enumerate(cells) if np.abs(cell_colour(picture, c) - colour).max() < 60]

    from PIL import Image

    Image.fromarray(pic2).save(tmp_path / "picture-2x2.png")      # for a person looking at a failure
    Image.fromarray(pic3).save(tmp_path / "picture-3x3.png")
    assert tiles(pic2, two, RED) and tiles(pic2, two, BLUE), "before: the 2x2 tiles do not show the cameras"
    assert tiles(pic3, three, RED) and tiles(pic3, three, BLUE), "after: the 3x3 tiles do not show the cameras"
    assert not tiles(pic3, two, RED) and not tiles(pic3, two, BLUE), "after the change the picture is still 2x2"
    # screenshots: kept with the report (CAU_SCREENSHOTS names the folder; docs/ has a copy)
    keep = os.environ.get("CAU_SCREENSHOTS")
    for name in ("console-vi.png", "console-en.png"):
        data = (shots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / name).write_bytes(data)
    assert gw.stop() == 0
