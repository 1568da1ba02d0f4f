"""baresip 1.0 (packages ``baresip-core``, ``baresip-ffmpeg``) as a scriptable SIP peer.

    from interop_tests.peers.baresip import Baresip

    b = Baresip("b", auto_answer=True)                     # or the baresip_factory fixture
    a = Baresip("a", audio_codecs=["PCMU/8000/1"])
    a.dial(b.uri)                                          # or "sip:8100@127.0.0.1:5060"
    a.wait_established(); b.wait_established()
    a.hangup(); a.wait_closed(); b.wait_closed()
    a.rtp_stats().rx_packets > 0                           # from rtp_stats at call end
    a.received_audio()                                     # WAV of what a decoded (sndfile)
    a.stop(); b.stop()

Each instance writes its own config directory (``config``, ``accounts``, the
``snd/`` recordings, ``stdout.log``), listens for SIP on a free loopback port and
is controlled through the ``ctrl_tcp`` module (netstring JSON commands and events:
CALL_INCOMING, CALL_RINGING, CALL_ESTABLISHED, CALL_CLOSED, CALL_RTCP,
REGISTER_OK, REGISTER_FAIL, ...). ``stdin`` is not used (``stdio.so`` needs a tty).

Found on Debian 12: ``ausine`` only runs at 48 kHz stereo (``ausrc_srate 48000``,
``ausrc_channels 2``; baresip resamples to the codec); there is no null player
module, ALSA's ``null`` device serves; ``sndfile`` dumps the decoded audio
(``*-dec.wav``, at the codec's rate) and the encoded side (``*-enc.wav``);
G.722 must be written ``G722/16000/1`` in ``audio_codecs``.
"""
from __future__ import annotations

import json
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .procs import LOOPBACK, PeerProcess, free_port, free_port_block, require_binary

MODULE_DIR = "/usr/lib/baresip/modules"

AUDIO_MODULES = {"PCMU": "g711.so", "PCMA": "g711.so", "G722": "g722.so", "opus": "opus.so",
                 "G726": "g726.so", "GSM": "gsm.so", "L16": "l16.so", "AMR": "amr.so"}
VIDEO_MODULES = {"H264": "avcodec.so", "H263": "avcodec.so", "H265": "avcodec.so",
                 "VP8": "vp8.so", "VP9": "vp9.so"}


@dataclass
class RtpStats:
    """baresip's end-of-call summary (``rtp_stats yes``) for the audio stream."""
    tx_packets: int
    rx_packets: int
    tx_errors: int = 0
    rx_errors: int = 0
    tx_kbps: float = 0.0
    rx_kbps: float = 0.0


class Baresip:
    def __init__(self, user: str = "a", *, workdir: str | Path | None = None,
                 audio_codecs: Sequence[str] = ("opus/48000/2", "G722/16000/1", "PCMU/8000/1"),
                 video_codecs: Sequence[str] = (),
                 audio_source: tuple[str, str | int] = ("ausine", 440),
                 video_source: tuple[str, str] | None = None,
                 auto_answer: bool = False,
                 register_to: tuple[str, str, str] | None = None,
                 sip_port: int | None = None, rtp_port_count: int = 20,
                 extra_config: dict[str, str] | None = None,
                 account_params: str = "", sip_trace: bool = False,
                 start_timeout: float = 20.0, media_encryption: str | None = None,
                 host: str = LOOPBACK, netns: str | None = None):
        """``register_to=(registrar "host:port", user, password)`` registers the
        account there (AOR ``sip:user@registrar``); otherwise ``regint=0``.
        ``audio_source=("aufile", "/path/to.wav")`` plays a WAV instead of a sine.
        ``video_source=("avformat", "/path/clip.avi")``: a Motion-JPEG .avi runs at full rate.
        ``media_encryption="srtp-mand"`` (or "srtp"): SDES SRTP with the srtp module.
        ``netns``: run inside that network namespace (``ip netns exec``), listening on ``host``
        (an address of the namespace the test process can reach, e.g. a veth end)."""
        self.binary = require_binary("baresip")
        if not Path(MODULE_DIR, "ctrl_tcp.so").exists():
            raise RuntimeError(f"{MODULE_DIR}/ctrl_tcp.so missing: install baresip-core "
                               "(scripts/install-test-deps.sh)")
        if any(c.split("/")[0] in VIDEO_MODULES for c in video_codecs) and not Path(
                MODULE_DIR, "avcodec.so").exists():
            raise RuntimeError("baresip avcodec.so missing: install baresip-ffmpeg "
                               "(scripts/install-test-deps.sh)")
        self.user = user
        self.host = host
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"cau-baresip-{user}-")
            workdir = self._tmp.name
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "snd").mkdir(exist_ok=True)
        # baresip listens on PORT (UDP, TCP) and PORT+1 (TLS): both must be free
        self.sip_port = sip_port or free_port_block(2, even=False)
        self.ctrl_port = free_port()
        self.rtp_lo = free_port_block(rtp_port_count)
        self.rtp_hi = self.rtp_lo + rtp_port_count - 1
        self.register_to = register_to
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._token = 0
        self._responses: dict[str, dict] = {}
        self._sock: socket.socket | None = None

        modules = {"account.so", "menu.so", "ctrl_tcp.so", "alsa.so", "sndfile.so",
                   "fakevideo.so", audio_source[0] + ".so"}
        modules |= {AUDIO_MODULES[c.split("/")[0]] for c in audio_codecs
                    if c.split("/")[0] in AUDIO_MODULES}
        modules |= {VIDEO_MODULES[c.split("/")[0]] for c in video_codecs
                    if c.split("/")[0] in VIDEO_MODULES}
        if video_source:
            modules.add(video_source[0] + ".so")
        if media_encryption:
            modules.add("srtp.so")
        app = {"account.so", "menu.so", "ctrl_tcp.so"}
        hp = f"[{host}]" if ":" in host else host      # an IPv6 address in host:port
        cfg = {
            "poll_method": "epoll",
            "sip_listen": f"{hp}:{self.sip_port}",
            "net_interface": host,
            "call_local_timeout": "120",
            "call_max_calls": "4",
            "audio_player": "alsa,null",
            "audio_alert": "alsa,null",
            "audio_source": f"{audio_source[0]},{audio_source[1]}",
            "ausrc_srate": "48000",
            "ausrc_channels": "2",
            "auplay_srate": "48000",
            "rtp_ports": f"{self.rtp_lo}-{self.rtp_hi}",
            "rtp_stats": "yes",
            "statmode_default": "off",
            "video_display": "fakevideo,nil",
            "avcodec_h264enc": "libx264",
            "module_path": MODULE_DIR,
            "ctrl_tcp_listen": f"{hp}:{self.ctrl_port}",
            "snd_path": str(self.dir / "snd"),
        }
        if video_source:
            cfg["video_source"] = f"{video_source[0]},{video_source[1]}"
        cfg.update(extra_config or {})
        lines = [f"{k} {v}" for k, v in cfg.items()]
        lines += [f"module {m}" for m in sorted(modules - app)]
        lines += [f"module_app {m}" for m in ("account.so", "menu.so", "ctrl_tcp.so")]
        (self.dir / "config").write_text("\n".join(lines) + "\n")

        params = [f"audio_codecs={','.join(audio_codecs)}"]
        if video_codecs:
            params.append(f"video_codecs={','.join(video_codecs)}")
        if auto_answer:
            params.append("answermode=auto")
        if register_to:
            registrar, reg_user, password = register_to
            aor = f"<sip:{reg_user}@{registrar}>"
            params += [f"auth_pass={password}", "regint=3600"]
        else:
            aor = f"<sip:{user}@{hp}:{self.sip_port}>"
            params.append("regint=0")
        if media_encryption:
            params.append(f"mediaenc={media_encryption}")
        if account_params:
            params.append(account_params.lstrip(";"))
        (self.dir / "accounts").write_text(aor + ";" + ";".join(params) + "\n")

        argv = [self.binary, "-f", str(self.dir)] + (["-s"] if sip_trace else [])
        if netns is not None:
            argv = [require_binary("ip"), "netns", "exec", netns] + argv
        self.proc = PeerProcess(argv, cwd=self.dir, name=f"baresip-{user}",
                                log_path=self.dir / "stdout.log")
        try:
            self.proc.wait_for(r"baresip is ready|ctrl_tcp: TCP socket listening",
                               timeout=start_timeout)
            self._connect(start_timeout)
        except Exception:
            self.stop()
            raise

    # ------------------------------------------------------------------ identity
    @property
    def uri(self) -> str:
        """The URI another peer dials to reach this instance directly."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{self.user}@{host}:{self.sip_port}"

    # ------------------------------------------------------------------ ctrl_tcp
    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.create_connection((self.host, self.ctrl_port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or not self.proc.alive():
                    raise RuntimeError(f"baresip ctrl_tcp not reachable on {self.ctrl_port}:\n"
                                       f"{self.proc.tail()}")
                time.sleep(0.05)
        self._sock.settimeout(None)
        threading.Thread(target=self._reader, daemon=True, name=f"baresip-{self.user}-ctrl").start()

    def _reader(self) -> None:
        buf = b""
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            buf += data
            while True:  # netstrings: LEN ":" JSON ","
                colon = buf.find(b":")
                if colon < 0:
                    break
                try:
                    n = int(buf[:colon])
                except ValueError:
                    buf = b""
                    break
                if len(buf) < colon + 1 + n + 1:
                    break
                payload, buf = buf[colon + 1:colon + 1 + n], buf[colon + 2 + n:]
                try:
                    msg = json.loads(payload)
                except ValueError:
                    continue
                with self._cond:
                    if msg.get("response"):
                        self._responses[str(msg.get("token"))] = msg
                    else:
                        msg["_t"] = time.monotonic()
                        self.events.append(msg)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict:
        """Send a menu command (``dial``, ``hangup``, ``accept``, ``callstat``, ``reginfo``,
        ``options``, ``listcalls`` ...) and return baresip's response
        (``{"ok": bool, "data": str}``)."""
        if self._sock is None:
            raise RuntimeError("baresip not connected")
        with self._cond:
            self._token += 1
            token = f"t{self._token}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"baresip-{self.user}: no response to {command!r}")
                self._cond.wait(remaining)
            return self._responses.pop(token)

    # ------------------------------------------------------------------ events
    def wait_event(self, *types: str, timeout: float = 10.0, start: int = 0) -> dict:
        """First event (index >= ``start``) of one of ``types``; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.events):
                    ev = self.events[i]
                    i += 1
                    if ev.get("type") in types:
                        return ev
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.proc.alive():
                    seen = [e.get("type") for e in self.events]
                    raise TimeoutError(f"baresip-{self.user}: no {types} within {timeout}s; "
                                       f"events: {seen}\noutput tail:\n{self.proc.tail()}")
                self._cond.wait(min(remaining, 0.2))

    def event_types(self) -> list[str]:
        with self._cond:
            return [e.get("type", "") for e in self.events]

    # ------------------------------------------------------------------ calls
    def dial(self, uri: str) -> dict:
        self._call_mark = len(self.events)
        resp = self.command("dial", uri)
        if not resp.get("ok"):
            raise RuntimeError(f"baresip-{self.user}: dial {uri} refused: {resp}")
        return resp

    def answer(self) -> dict:
        return self.command("accept")

    def hangup(self) -> dict:
        return self.command("hangup")

    def call_outcome(self, timeout: float = 10.0) -> dict:
        """The last dial's CALL_ESTABLISHED, or its CALL_CLOSED (with the reason) if it closed first."""
        return self.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=timeout,
                               start=getattr(self, "_call_mark", 0))

    def wait_established(self, timeout: float = 10.0) -> dict:
        """CALL_ESTABLISHED; raises (with the close reason) if the call closes first."""
        ev = self.call_outcome(timeout)
        if ev["type"] == "CALL_CLOSED":
            raise AssertionError(f"baresip-{self.user}: call closed before established: "
                                 f"{ev.get('param')}")
        return ev

    def wait_incoming(self, timeout: float = 10.0) -> dict:
        return self.wait_event("CALL_INCOMING", timeout=timeout)

    def wait_closed(self, timeout: float = 10.0) -> str:
        """Wait for CALL_CLOSED; return its reason (e.g. "Connection reset by user")."""
        ev = self.wait_event("CALL_CLOSED", timeout=timeout,
                             start=getattr(self, "_call_mark", 0))
        # rtp_stats are printed right after the close event
        try:
            self.proc.wait_for(r"^\s*errors:", timeout=2)
        except TimeoutError:
            pass
        return ev.get("param", "")

    def registered(self, timeout: float = 10.0) -> bool:
        """True once the registrar answered 200, False on a failure (or nothing within
        ``timeout``). Looks at REGISTER_OK/REGISTER_FAIL events and at the stdout line
        ``user@host: {0/UDP/v4} 200 OK () [1 binding]``: the first registration can
        finish before the ctrl_tcp connection is up, and its event is then lost."""
        rx = re.compile(r"\{\d+/\w+/v\d\} (\d{3}) ")
        deadline = time.monotonic() + timeout
        while True:
            types = self.event_types()
            if "REGISTER_OK" in types:
                return True
            if "REGISTER_FAIL" in types:
                return False
            codes = rx.findall(self.proc.output)
            if codes:
                return codes[-1] == "200"
            if time.monotonic() > deadline or not self.proc.alive():
                return False
            time.sleep(0.05)

    # ------------------------------------------------------------------ media facts
    def rtp_stats(self, last: bool = True) -> RtpStats | None:
        """Audio RTP packet counts of the last (or first) finished call, None if none."""
        rx = re.compile(r"^packets:\s+(\d+)\s+(\d+)")
        found = []
        lines = self.proc.output.splitlines()
        for i, line in enumerate(lines):
            m = rx.match(line.strip())
            if m:
                st = RtpStats(int(m.group(1)), int(m.group(2)))
                for extra in lines[i + 1:i + 3]:
                    mb = re.match(r"\s*avg\. bitrate:\s+([\d.]+)\s+([\d.]+)", extra)
                    me = re.match(r"\s*errors:\s+(\d+)\s+(\d+)", extra)
                    if mb:
                        st.tx_kbps, st.rx_kbps = float(mb.group(1)), float(mb.group(2))
                    if me:
                        st.tx_errors, st.rx_errors = int(me.group(1)), int(me.group(2))
                found.append(st)
        if not found:
            return None
        return found[-1] if last else found[0]

    def rtcp_stats(self) -> dict | None:
        """The latest CALL_RTCP event's ``rtcp_stats`` (tx/rx sent, lost, jitter; rtt)."""
        with self._cond:
            for ev in reversed(self.events):
                if ev.get("type") == "CALL_RTCP":
                    return ev.get("rtcp_stats")
        return None

    def audio_codec(self) -> tuple[str | None, str | None]:
        """(encoder, decoder) last set, e.g. ("G722 16000Hz 1ch", "G722 16000Hz 1ch")."""
        out = self.proc.output
        enc = re.findall(r"Set audio encoder: (.+)", out)
        dec = re.findall(r"Set audio decoder: (.+)", out)
        return (enc[-1].strip() if enc else None, dec[-1].strip() if dec else None)

    def recordings(self, kind: str = "dec") -> list[Path]:
        """sndfile dumps, oldest first: ``dec`` = what baresip heard, ``enc`` = what it sent."""
        return sorted((self.dir / "snd").glob(f"*-{kind}.wav"), key=lambda p: p.stat().st_mtime)

    def received_audio(self) -> Path | None:
        """WAV of the audio decoded in the latest call (complete once the call closed)."""
        rec = self.recordings("dec")
        return rec[-1] if rec else None

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        if getattr(self, "proc", None) is not None:
            self.proc.stop(grace=3.0)

    def __enter__(self) -> "Baresip":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Baresip {self.uri} dir={self.dir}>"
