"""pjsua2 (PyPI ``pjsua2-python``, PJSIP 2.15.1, audio only) as an independent SIP peer.

PJSIP never runs inside the test process: every endpoint is a child process
(``python -m interop_tests.peers.pjsua``) that does one scripted job and prints
JSON lines on stdout.

Command line::

    # one call: dial, play a tone, record what comes back, hang up after N seconds
    python -m interop_tests.peers.pjsua --call sip:8100@127.0.0.1:5060 \
        --codecs G722,PCMU --tone 1000 --seconds 5 --record heard.wav
    # answer calls (auto-answer with a tone) until --timeout, or --max-calls calls ended
    python -m interop_tests.peers.pjsua --answer --port 5099 --tone 440 --max-calls 1

Output: ``{"event": "ready", "port": N, "uri": ...}`` once listening, then one
``{"event": "call", ...}`` per ended call: state reached ("CONFIRMED" if it was
answered), SIP status code and reason, negotiated codec (name, clock rate, payload
type), RTP rx/tx packet counts and loss (``Call.getStreamStat``), and for a
recording its dominant frequency and level. Exit code 0 when every call was
confirmed.

From Python::

    r = pjsua_call("sip:8100@127.0.0.1:5060", codecs=["G722"], tone=1000, seconds=3)
    assert r.confirmed and r.codec == "G722" and r.rx_packets > 0

    ans = PjsuaAnswerer(tone=440)        # background child; ans.uri to dial
    ...; results = ans.stop()            # list of PjsuaCallResult

pjsua2 facts (see PEERS.md): null sound device; threadCnt=0 + mainThreadOnly and
polling ``libHandleEvents`` from Python; media bound to 127.0.0.1 through the
account's ``mediaConfig.transportConfig``; every pjsua2 object released before
``libDestroy()``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .procs import LOOPBACK, PeerProcess, free_port, free_port_block, wav_peak

CODEC_IDS = {"PCMU": "PCMU/8000/1", "PCMA": "PCMA/8000/1", "G722": "G722/16000/1",
             "speex": "speex/16000/1", "iLBC": "iLBC/8000/1", "GSM": "GSM/8000/1",
             "L16": "L16/16000/1"}


# =========================================================================== parent side
@dataclass
class PjsuaCallResult:
    state: str = "NULL"               # last call state reached: CONFIRMED when answered
    confirmed: bool = False           # the call reached CONFIRMED at some point
    status_code: int = 0              # last SIP status code (200, 486, 488 ...)
    reason: str = ""
    codec: str | None = None          # "G722", "PCMU" ...
    clock_rate: int | None = None
    tx_pt: int | None = None
    rx_pt: int | None = None
    rx_packets: int = 0
    tx_packets: int = 0
    rx_lost: int = 0
    remote_rtp: str | None = None
    duration: float = 0.0
    record: str | None = None
    record_freq: float | None = None  # dominant frequency of what was heard (Hz)
    record_dbfs: float | None = None
    error: str | None = None
    exit_code: int | None = None      # the child's (0: every call confirmed, clean exit)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict) -> "PjsuaCallResult":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "raw"}
        return cls(**known, raw=d)


def _python() -> str:
    return sys.executable


def _parse(proc: PeerProcess) -> list[PjsuaCallResult]:
    out = []
    for line in proc.output.splitlines():
        if line.startswith("{"):
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("event") == "call":
                out.append(PjsuaCallResult.from_json(d))
    return out


def _argv(mode: list[str], *, codecs: Sequence[str], tone: float | None, seconds: float,
          record: str | os.PathLike | None, port: int, rtp_port: int, timeout: float,
          log_level: int, user: str | None = None, password: str | None = None,
          tls: bool = False, srtp: str | None = None) -> list[str]:
    argv = [_python(), "-m", "interop_tests.peers.pjsua", *mode,
            "--codecs", ",".join(codecs), "--seconds", str(seconds), "--port", str(port),
            "--rtp-port", str(rtp_port), "--timeout", str(timeout),
            "--log-level", str(log_level)]
    if tone:
        argv += ["--tone", str(tone)]
    if record:
        argv += ["--record", str(record)]
    if user:
        argv += ["--user", user]
    if password is not None:
        argv += ["--password", password]
    if tls:
        argv += ["--tls"]
    if srtp:
        argv += ["--srtp", srtp]
    return argv


def _check_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("pjsua2") is None:
        raise RuntimeError("pjsua2 not importable: install pjsua2-python "
                           "(scripts/install-test-deps.sh)")


def pjsua_call(uri: str, *, codecs: Sequence[str] = ("G722", "PCMU", "PCMA"),
               tone: float | None = 1000, seconds: float = 3.0,
               record: str | os.PathLike | None = None, timeout: float = 20.0,
               log_level: int = 1, user: str | None = None, password: str | None = None,
               tls: bool = False, srtp: str | None = None, rtp_port: int | None = None) -> PjsuaCallResult:
    """Dial ``uri`` from a pjsua2 child, send ``tone`` Hz for ``seconds`` once confirmed,
    hang up, return what happened. ``record`` (a WAV path) saves what was heard;
    without it a temporary file is used and only its frequency/level are kept.
    ``user``/``password``: call as that user (From), answering digest challenges with the password
    (no registration). ``tls``: a TLS transport too (dial a ``;transport=tls`` URI; the far
    certificate is not verified). ``srtp``: "mandatory" or "optional" SDES SRTP (RFC 4568),
    keys only over TLS (PJSIP's secure-signalling rule). ``rtp_port``: the first of 8 RTP ports
    (to capture them)."""
    _check_installed()
    tmp = None
    if record is None:
        tmp = tempfile.TemporaryDirectory(prefix="cau-pjsua-")
        record = Path(tmp.name) / "heard.wav"
    argv = _argv(["--call", uri], codecs=codecs, tone=tone, seconds=seconds, record=record,
                 port=free_port(), rtp_port=rtp_port or free_port_block(8), timeout=timeout,
                 log_level=log_level, user=user, password=password, tls=tls, srtp=srtp)
    proc = PeerProcess(argv, name="pjsua-call", env=_child_env())
    try:
        proc.wait(timeout + 10)
    except subprocess.TimeoutExpired:
        pass
    finally:
        proc.stop()
        if tmp is not None:
            tmp.cleanup()
    results = _parse(proc)
    if not results:
        raise RuntimeError(f"pjsua child gave no call result (exit {proc.proc.returncode}):\n"
                           f"{proc.tail(60)}")
    res = results[-1]
    if tmp is not None:
        res.record = None
    res.raw["output"] = proc.output
    res.exit_code = proc.proc.returncode
    return res


class PjsuaAnswerer:
    """A background pjsua2 child that auto-answers calls with a tone (200 OK)."""

    def __init__(self, *, codecs: Sequence[str] = ("G722", "PCMU", "PCMA"),
                 tone: float | None = 440, seconds: float = 0, max_calls: int = 0,
                 record: str | os.PathLike | None = None, timeout: float = 60.0,
                 answer_code: int = 200, log_level: int = 1, port: int | None = None,
                 tls: bool = False, srtp: str | None = None, rtp_port: int | None = None,
                 tls_cert: tuple[str | os.PathLike, str | os.PathLike] | None = None):
        """``seconds`` > 0: hang up each call that long after it was confirmed (else
        wait for the caller). ``answer_code`` 486/488/...: reject instead. ``tls``: also listen
        for SIP over TLS (:attr:`tls_uri`) with ``tls_cert`` (certificate chain, key: PEM files)
        or a self-signed certificate made for it. ``srtp``: "mandatory" or "optional" SDES SRTP
        (keys over TLS only)."""
        _check_installed()
        self.port = port or free_port()
        self.rtp_port = rtp_port or free_port_block(8)
        argv = _argv(["--answer"], codecs=codecs, tone=tone, seconds=seconds, record=record,
                     port=self.port, rtp_port=self.rtp_port, timeout=timeout,
                     log_level=log_level, srtp=srtp)
        argv += ["--max-calls", str(max_calls), "--answer-code", str(answer_code)]
        self._tmp = None
        self.tls_port = None
        if tls:
            from gateway.webrtc.tls import self_signed

            if tls_cert is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="cau-pjsua-tls-")
                made = self_signed(Path(self._tmp.name), [LOOPBACK])
                tls_cert = (made.cert, made.key)
            self.tls_port = free_port()
            argv += ["--tls", "--tls-port", str(self.tls_port), "--tls-cert", str(tls_cert[0]),
                     "--tls-key", str(tls_cert[1])]
        self.proc = PeerProcess(argv, name="pjsua-answer", env=_child_env())
        try:
            self.proc.wait_for(r'"event": "ready"', timeout=15)
        except Exception:
            self.proc.stop()
            raise

    @property
    def uri(self) -> str:
        return f"sip:pjsua@{LOOPBACK}:{self.port}"

    @property
    def tls_uri(self) -> str:
        return f"sip:pjsua@{LOOPBACK}:{self.tls_port};transport=tls"

    def results(self) -> list[PjsuaCallResult]:
        return _parse(self.proc)

    def wait_calls(self, n: int = 1, timeout: float = 20.0) -> list[PjsuaCallResult]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.results()
            if len(r) >= n:
                return r
            if not self.proc.alive():
                break
            time.sleep(0.1)
        raise TimeoutError(f"pjsua answerer: {len(self.results())} of {n} calls ended:\n"
                           f"{self.proc.tail(60)}")

    def stop(self) -> list[PjsuaCallResult]:
        """SIGTERM → the child hangs up, reports, releases pjsua2 and exits."""
        self.proc.stop(grace=8.0)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return self.results()


def _child_env() -> dict:
    env = dict(os.environ)
    # the child imports this package: make the checkout importable when not installed
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# =========================================================================== child side
def _emit(d: dict) -> None:
    sys.stdout.write(json.dumps(d) + "\n")
    sys.stdout.flush()


def _child(args: argparse.Namespace) -> int:  # noqa: C901 - one scripted job
    import signal

    import pjsua2 as pj

    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("flag", True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__("flag", True))

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "pjsua2 cau-interop"
    cfg.logConfig.level = args.log_level
    cfg.logConfig.consoleLevel = args.log_level
    cfg.medConfig.hasIoqueue = True
    cfg.medConfig.threadCnt = 0
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = args.port
    tcfg.boundAddress = LOOPBACK
    tcfg.publicAddress = LOOPBACK
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    if args.tls:                         # TLS: client side, and a listener when given a certificate
        tlscfg = pj.TransportConfig()
        tlscfg.port = args.tls_port or free_port()
        if args.tls_cert:
            tlscfg.tlsConfig.certFile = args.tls_cert
            tlscfg.tlsConfig.privKeyFile = args.tls_key
        tlscfg.boundAddress = LOOPBACK
        tlscfg.publicAddress = LOOPBACK
        tlscfg.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
        tlscfg.tlsConfig.verifyServer = False
        ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tlscfg)
    ep.libStart()
    ep.audDevManager().setNullDev()

    wanted = [CODEC_IDS.get(c, c) for c in args.codecs.split(",") if c]
    for ci in ep.codecEnum2():
        ep.codecSetPriority(ci.codecId, 0)
    for i, cid in enumerate(wanted):
        ep.codecSetPriority(cid, 255 - i)

    calls: list = []
    reports: list[dict] = []
    media: dict = {}

    def new_tone():
        if not args.tone:
            return None
        tg = pj.ToneGenerator()
        tg.createToneGenerator(16000, 1)
        td = pj.ToneDesc()
        td.freq1 = int(args.tone)
        td.freq2 = 0
        td.on_msec = 1000
        td.off_msec = 0
        td.volume = 0
        v = pj.ToneDescVector()
        v.append(td)
        tg.play(v, True)
        return tg

    class Call(pj.Call):
        def __init__(self, acc, call_id=pj.PJSUA_INVALID_ID):
            super().__init__(acc, call_id)
            self.report = {"event": "call", "state": "NULL", "confirmed": False,
                           "status_code": 0, "reason": "", "record": args.record}
            self.confirmed_at = None
            self.t_confirmed = None
            self.done = False
            self.tone = None
            self.rec = None

        def onCallState(self, prm):
            ci = self.getInfo()
            self.report["state"] = ci.stateText
            if ci.lastStatusCode:
                self.report["status_code"] = int(ci.lastStatusCode)
                self.report["reason"] = ci.lastReason
            if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
                self.report["confirmed"] = True
                self.confirmed_at = self.t_confirmed = time.monotonic()
            if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.done = True
                if self.t_confirmed:
                    self.report["duration"] = round(time.monotonic() - self.t_confirmed, 3)

        def onCallMediaState(self, prm):
            ci = self.getInfo()
            for i, mi in enumerate(ci.media):
                if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                    am = self.getAudioMedia(i)
                    if self.tone is None and args.tone:
                        self.tone = new_tone()
                        self.tone.startTransmit(am)
                    if self.rec is None and args.record:
                        self.rec = pj.AudioMediaRecorder()
                        self.rec.createRecorder(args.record)
                        am.startTransmit(self.rec)
                    self.stats()

        def stats(self):
            """Snapshot stream facts while the media is still there."""
            try:
                si = self.getStreamInfo(0)
                self.report.update(codec=si.codecName, clock_rate=int(si.codecClockRate),
                                   tx_pt=int(si.txPt), rx_pt=int(si.rxPt),
                                   remote_rtp=si.remoteRtpAddress)
                ss = self.getStreamStat(0)
                for line in self.dump(True, "").splitlines():     # "SRTP status: Active Crypto-suite: ..."
                    if "SRTP" in line and "status" in line:
                        self.report["srtp"] = line.strip()
                self.report.update(rx_packets=int(ss.rtcp.rxStat.pkt),
                                   tx_packets=int(ss.rtcp.txStat.pkt),
                                   rx_lost=int(ss.rtcp.rxStat.loss))
            except Exception:  # no stream (yet / any more)
                pass

        def release_media(self):
            for name in ("tone", "rec"):
                obj = getattr(self, name)
                if obj is not None:
                    try:
                        obj.stop() if name == "tone" else None
                    except Exception:
                        pass
                    setattr(self, name, None)
                    del obj

    class Account(pj.Account):
        def onIncomingCall(self, prm):
            c = Call(self, prm.callId)
            calls.append(c)
            op = pj.CallOpParam()
            op.statusCode = args.answer_code
            c.answer(op)
            if args.answer_code >= 300:
                c.report["status_code"] = args.answer_code

    def finish(r: dict) -> None:
        """Report one ended call now (a recorder was released first: WAV complete)."""
        r["_reported"] = True
        reports.append(r)
        out = {k: v for k, v in r.items() if k != "_reported"}
        if out.get("record") and Path(out["record"]).exists():
            try:
                freq, db = wav_peak(out["record"])
                out["record_freq"], out["record_dbfs"] = freq, (db if db > -200 else None)
            except Exception as e:  # a truncated WAV must not hide the call result
                out["error"] = f"record: {e}"
        _emit(out)

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{args.user}@{LOOPBACK}:{args.port}"
    if not args.tls_cert:                # with a TLS listener: PJSIP's Contact per transport
        acfg.sipConfig.contactForced = f"<sip:{args.user}@{LOOPBACK}:{args.port}>"
    if args.password is not None:      # answers 401/407 to its requests (any realm); no REGISTER
        acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", args.user, 0, args.password))
    acfg.mediaConfig.transportConfig.boundAddress = LOOPBACK
    acfg.mediaConfig.transportConfig.publicAddress = LOOPBACK
    acfg.mediaConfig.transportConfig.port = args.rtp_port
    acfg.mediaConfig.transportConfig.portRange = 8
    if args.srtp:
        acfg.mediaConfig.srtpUse = {"mandatory": pj.PJMEDIA_SRTP_MANDATORY,
                                    "optional": pj.PJMEDIA_SRTP_OPTIONAL}[args.srtp]
        acfg.mediaConfig.srtpSecureSignaling = 1          # keys only on a TLS hop
    acfg.natConfig.iceEnabled = False
    acfg.natConfig.sdpNatRewriteUse = 0
    acfg.natConfig.viaRewriteUse = 0
    acfg.natConfig.contactRewriteUse = 0
    acc = Account()
    acc.create(acfg)
    _emit({"event": "ready", "port": args.port, "uri": acfg.idUri})

    deadline = time.monotonic() + args.timeout
    if args.call:
        c = Call(acc)
        calls.append(c)
        op = pj.CallOpParam(True)
        try:
            c.makeCall(args.call, op)
        except pj.Error as e:
            c.report.update(error=e.info(), done=True)
            c.done = True
    try:
        while time.monotonic() < deadline and not stop["flag"]:
            ep.libHandleEvents(10)
            now = time.monotonic()
            for c in list(calls):
                if c.confirmed_at and not c.done:
                    c.stats()
                    if args.seconds and now - c.confirmed_at >= args.seconds:
                        c.stats()
                        try:
                            c.hangup(pj.CallOpParam())
                        except pj.Error:
                            pass
                        c.confirmed_at = None  # hang up once
                if c.done and not c.report.get("_reported"):
                    c.release_media()
                    finish(c.report)
            if args.call and all(c.done for c in calls):
                break
            if args.max_calls and len(reports) >= args.max_calls:
                break
    finally:
        # hang up what is left, let the BYEs go out
        for c in calls:
            if not c.done:
                c.stats()
                try:
                    c.hangup(pj.CallOpParam())
                except pj.Error:
                    pass
        end = time.monotonic() + 2
        while time.monotonic() < end and not all(c.done for c in calls):
            ep.libHandleEvents(10)
        for c in calls:
            c.release_media()
            if not c.report.get("_reported"):
                if not c.done:
                    c.report.setdefault("error", "timeout" if not stop["flag"] else "stopped")
                finish(c.report)
        ok = all(r.get("confirmed", False) for r in reports)
        c = None  # noqa: F841 - drop the last loop reference before libDestroy
        calls.clear()
        acc.shutdown()
        del acc
        for _ in range(20):
            ep.libHandleEvents(10)
        ep.libDestroy()
        del ep
    if args.call and not reports:
        ok = False
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m interop_tests.peers.pjsua",
                                description="pjsua2 test peer: one scripted call or an answerer")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--call", metavar="URI", help="dial URI")
    mode.add_argument("--answer", action="store_true", help="auto-answer incoming calls")
    p.add_argument("--codecs", default="G722,PCMU,PCMA",
                   help="codec preference, e.g. G722,PCMU (others disabled)")
    p.add_argument("--tone", type=float, default=1000.0, help="tone to send, Hz (0: silence)")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="hang up this long after the call is confirmed (0: never)")
    p.add_argument("--record", help="WAV file for the received audio")
    p.add_argument("--port", type=int, default=0, help="SIP UDP port (0: any)")
    p.add_argument("--rtp-port", type=int, default=40000, help="first RTP port (range of 8)")
    p.add_argument("--timeout", type=float, default=30.0, help="give up after this long")
    p.add_argument("--max-calls", type=int, default=0, help="--answer: exit after N calls")
    p.add_argument("--answer-code", type=int, default=200, help="--answer: status to answer with")
    p.add_argument("--log-level", type=int, default=1, help="PJSIP log level (0-6)")
    p.add_argument("--user", default="pjsua", help="user part of From/Contact")
    p.add_argument("--password", help="digest password for challenges")
    p.add_argument("--tls", action="store_true", help="also a TLS transport (for transport=tls URIs)")
    p.add_argument("--tls-port", type=int, default=0, help="--tls: the TLS listener's port")
    p.add_argument("--tls-cert", help="--tls: PEM certificate for the listener")
    p.add_argument("--tls-key", help="--tls: PEM private key for the listener")
    p.add_argument("--srtp", choices=("mandatory", "optional"), help="SDES SRTP (keys over TLS only)")
    args = p.parse_args(argv)
    if args.port == 0:
        args.port = free_port()
    return _child(args)


if __name__ == "__main__":
    sys.exit(main())
