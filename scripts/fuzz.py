#!/usr/bin/env python3
"""Fuzz driver: hostile SIP (UDP, TCP, TLS), H.225.0 call signalling and RAS inputs against a Cầu it starts.

A lab runs it to see the gateway survive what an attacker on its network can send::

    .venv/bin/python scripts/fuzz.py --sip 100000 --h225 50000 --ras 50000      # the full run
    .venv/bin/python scripts/fuzz.py --sip 3000 --h225 1000 --ras 1000          # what CI runs

It starts ``cau run`` on loopback (ephemeral ports, the embedded dial plan), warms every protocol
up with valid messages, then sends mutated messages — bytes flipped, inserted, cut, lines
duplicated or swapped, huge numbers, bare CR/LF, thousands of payload types — built from valid
SIP requests (and RFC 4475's torture messages when ``--rfc4475 DIR`` names them), H.225.0 SETUPs
and RAS requests.  Throughout, valid probes must be answered: a SIP OPTIONS over UDP and over TLS (200), a RAS
GRQ (GCF), an H.225.0 connection accepted, ``/healthz``.  At the end it reports, per protocol:
inputs sent, probes missed, the gateway's media-clock ticks that fired more than 20 ms late (the
event loop was busy that long), the gateway's memory before and after, and unhandled tracebacks
in its log.  Exit 0 when the gateway is alive, no probe was missed and no traceback was logged;
1 otherwise.  Loopback only; everything it starts is stopped.  ``--json FILE`` writes the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

HOST = "127.0.0.1"


# ----------------------------------------------------------------------------- the gateway
class Gateway:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.out = workdir / "cau.out"
        self.err = workdir / "cau.err"
        args = [sys.executable, "-m", "gateway", "run", "--bind", HOST, "--http-port", "0", "--sip-port", "0",
                "--h323-port", "0", "--ras-port", "0", "--https-port", "0", "--sip-tls-port", "0", "--no-watch",
                "--rtp-ports", "42000-42999"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_STATE_HOME": str(workdir / "state")}
        self.proc = subprocess.Popen(args, cwd=workdir, stdout=self.out.open("w"), stderr=self.err.open("w"), env=env)
        self.ports = self._wait_ports()

    def _wait_ports(self) -> dict[str, int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.out.read_text(errors="replace")
            want = {"http": r"HTTP listening on [\d.]+:(\d+)", "sip": r"SIP listening on [\d.]+:(\d+)",
                    "sip_tls": r"SIP over TLS listening on [\d.]+:(\d+)",
                    "h323": r"H\.323 call signalling listening on [\d.]+:(\d+)",
                    "ras": r"H\.323 RAS \(gatekeeper\) listening on [\d.]+:(\d+)"}
            got = {k: re.search(p, text) for k, p in want.items()}
            if all(got.values()):
                return {k: int(m.group(1)) for k, m in got.items()}
            if self.proc.poll() is not None:
                raise SystemExit(f"cau run exited {self.proc.returncode}:\n{self.err.read_text()[-2000:]}")
            time.sleep(0.1)
        raise SystemExit("cau run did not report its ports")

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://{HOST}:{self.ports['http']}/api/status", timeout=10) as r:
            return json.loads(r.read())

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.ports['http']}/healthz", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def rss_kib(self) -> int:
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0
        m = re.search(r"VmRSS:\s+(\d+)", text)
        return int(m.group(1)) if m else 0

    def log(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# ----------------------------------------------------------------------------- inputs
def sip_templates(port: int, rfc4475: Path | None) -> list[bytes]:
    sdp = ("v=0\r\no=lab 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 9 RTP/AVP 0 8 9 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
           "m=video 9 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n")

    def req(method: str, uri: str, body: str = "", extra: str = "") -> bytes:
        head = (f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK{random.getrandbits(40):x}\r\n"
                f"Max-Forwards: 70\r\nFrom: \"Fuzz\" <sip:fuzz@127.0.0.1>;tag={random.getrandbits(32):x}\r\n"
                f"To: <{uri}>\r\nCall-ID: {random.getrandbits(64):x}@fuzz\r\nCSeq: 1 {method}\r\n"
                f"Contact: <sip:fuzz@127.0.0.1:9>\r\n{extra}")
        if body:
            head += f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        else:
            head += "Content-Length: 0\r\n\r\n"
        return head.encode()

    out = [req("INVITE", f"sip:1000@127.0.0.1:{port}", sdp, "Session-Expires: 1800\r\nSupported: timer\r\n"),
           req("INVITE", f"sip:2000@127.0.0.1:{port}", sdp),
           req("OPTIONS", f"sip:1000@127.0.0.1:{port}"),
           req("REGISTER", f"sip:127.0.0.1:{port}"),
           req("BYE", f"sip:1000@127.0.0.1:{port}"),
           req("INFO", f"sip:1000@127.0.0.1:{port}", "", "Content-Type: application/dtmf-relay\r\n"),
           b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
           b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"]
    if rfc4475 is not None and rfc4475.is_dir():
        out += [p.read_bytes() for p in sorted(rfc4475.glob("*.dat"))]
    return out


def h225_templates(port: int) -> list[bytes]:
    from gateway.h323 import q931, tpkt

    out = []
    for number in ("1000", "2000", "0090001", "9"):
        setup = q931.build_setup(random.randrange(1, 32767), os.urandom(16), os.urandom(16),
                                 [("h323-ID", "fuzz"), ("dialedDigits", "5999")], [("dialedDigits", number)],
                                 (HOST, port), (HOST, 1720), None, True, display="Fuzz").encode()
        out.append(tpkt.tpkt_frame(setup))
    return out


def ras_templates(gk_port: int) -> list[bytes]:
    from gateway.h323 import ras

    me = (HOST, 9)
    return [ras.build_grq(1, me, aliases=[("h323-ID", "fuzz")]),
            ras.build_rrq(2, [(HOST, 1720)], [me], aliases=[("h323-ID", "fuzz"), ("dialedDigits", "5999")]),
            ras.build_arq(3, "1_cau", [("h323-ID", "fuzz")], 3840, 7, bytes(16), bytes(range(16)),
                          destination_aliases=[("dialedDigits", "1000")]),
            ras.build_lrq(4, [("dialedDigits", "1000")], me),
            ras.build_urq(5, [(HOST, 1720)], endpoint_identifier="1_cau"),
            ras.build_irr(6, "1_cau", me, [(HOST, 1720)], need_response=True)]


def mutate(data: bytes, rnd: random.Random, text: bool) -> bytes:
    """One to four random mutations of ``data``."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(12 if text else 6)
        if not b:
            b = bytearray(os.urandom(rnd.randint(1, 64)))
        i = rnd.randrange(len(b))
        if op == 0:                                   # flip bits
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:                                 # random byte
            b[i] = rnd.randrange(256)
        elif op == 2:                                 # insert random bytes
            b[i:i] = os.urandom(rnd.randint(1, 16))
        elif op == 3:                                 # cut
            del b[i:i + rnd.randint(1, 32)]
        elif op == 4:                                 # truncate
            b = b[:i]
        elif op == 5:                                 # repeat a slice
            j = min(len(b), i + rnd.randint(1, 64))
            b[j:j] = b[i:j] * rnd.randint(1, 20)
        elif op == 6:                                 # a header line duplicated or dropped
            lines = bytes(b).split(b"\r\n")
            k = rnd.randrange(len(lines))
            if rnd.random() < 0.5:
                lines.insert(k, lines[k])
            else:
                del lines[k]
            b = bytearray(b"\r\n".join(lines))
        elif op == 7:                                 # a huge number
            m = list(re.finditer(rb"\d+", bytes(b)))
            if m:
                x = rnd.choice(m)
                b[x.start():x.end()] = rnd.choice([b"9" * rnd.randint(20, 400), b"-1", b"0", b"4294967296"])
        elif op == 8:                                 # a bare CR or LF inside a line
            b[i:i] = rnd.choice([b"\r", b"\n", b"\x00", b"\r\r\n"])
        elif op == 9:                                 # thousands of payload types
            x = re.search(rb"m=audio 9 RTP/AVP [0-9 ]+", bytes(b))
            if x:
                b[x.start():x.end()] = b"m=audio 9 RTP/AVP " + b" ".join(
                    str(rnd.randrange(128)).encode() for _ in range(rnd.randint(65, 4000)))
        elif op == 10:                                # non-ASCII / UTF-8 junk
            b[i:i] = rnd.choice(["é".encode(), "٣".encode(), b"\xff\xfe", "\u202e".encode()])
        else:                                         # a very long header value
            b[i:i] = b"X" * rnd.randint(1000, 20000)
    return bytes(b)


# ----------------------------------------------------------------------------- probes
class Probes:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((HOST, 0))
        self.missed: dict[str, int] = {"sip": 0, "sip_tls": 0, "ras": 0, "h225": 0, "http": 0}
        self.done = 0

    def _ask(self, data: bytes, port: int, want: bytes, timeout: float = 3.0) -> bool:
        self.udp.sendto(data, (HOST, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.udp.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                got = self.udp.recv(65535)
            except OSError:
                return False
            if want in got:
                return True
        return False

    def _ask_tls(self, data: bytes, want: bytes) -> bool:
        try:
            with socket.create_connection((HOST, self.gw.ports["sip_tls"]), timeout=3) as raw, \
                    _TLS.wrap_socket(raw, server_hostname=HOST) as s:
                s.sendall(data)
                got = b""
                while want not in got and b"\r\n\r\n" not in got:
                    chunk = s.recv(65535)
                    if not chunk:
                        break
                    got += chunk
                return want in got and got.startswith(b"SIP/2.0 200")
        except OSError:
            return False

    def run(self) -> None:
        from gateway.h323 import ras

        self.done += 1
        port = self.gw.ports["sip"]
        opt = (f"OPTIONS sip:1000@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{self.udp.getsockname()[1]};"
               f"rport;branch=z9hG4bKprobe{self.done}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\n"
               f"To: <sip:1000@127.0.0.1>\r\nCall-ID: probe-{self.done}@fuzz\r\nCSeq: 1 OPTIONS\r\n"
               "Content-Length: 0\r\n\r\n").encode()
        if not self._ask(opt, port, f"probe-{self.done}@fuzz".encode()):
            self.missed["sip"] += 1
        # its own branch: the same branch and sent-by would make it a retransmission of the UDP one
        tls_opt = (opt.replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS").replace(b"@fuzz", b"@fuzz-tls")
                   .replace(b"z9hG4bKprobe", b"z9hG4bKtlsprobe"))
        if not self._ask_tls(tls_opt, f"probe-{self.done}@fuzz-tls".encode()):
            self.missed["sip_tls"] += 1
        grq = ras.build_grq(40000 + self.done % 20000, (HOST, self.udp.getsockname()[1]))
        if not self._ask(grq, self.gw.ports["ras"], b""):
            self.missed["ras"] += 1
        try:
            socket.create_connection((HOST, self.gw.ports["h323"]), timeout=3).close()
        except OSError:
            self.missed["h225"] += 1
        if not self.gw.healthy():
            self.missed["http"] += 1


# ----------------------------------------------------------------------------- senders
def send_udp(sock: socket.socket, data: bytes, port: int) -> None:
    try:
        sock.sendto(data[:65507], (HOST, port))
    except OSError:
        pass


_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE          # the gateway's own self-made certificate, on loopback


def send_tcp(data: bytes, port: int, tls: bool = False) -> None:
    """One connection per input, as an attacker would open them (with TLS the handshake is part of
    the load); a short wait for whatever the gateway answers."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as raw:
            s = _TLS.wrap_socket(raw, server_hostname=HOST) if tls else raw
            with s:
                s.sendall(data)
                s.settimeout(0.005)
                try:
                    s.recv(4096)
                except OSError:
                    pass
    except OSError:
        pass


def drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(65535)
    except OSError:
        pass
    sock.setblocking(True)


def clock_late(gw: Gateway) -> dict:
    c = gw.status()["media"]["clock"]
    return {"late_over_20ms": c.get("late_over_20ms", 0), "late_over_100ms": c.get("late_over_100ms", 0),
            "max_lateness_ms": c.get("max_lateness_ms", 0)}


def phase(name: str, count: int, gw: Gateway, probes: Probes, make, rate: float, probe_every: int) -> dict:
    before = clock_late(gw)
    rss0 = gw.rss_kib()
    missed0 = dict(probes.missed)
    t0 = time.monotonic()
    for i in range(count):
        make(i)
        if rate:
            ahead = (i + 1) / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        if (i + 1) % probe_every == 0:
            probes.run()
    probes.run()
    after = clock_late(gw)
    return {"inputs": count, "seconds": round(time.monotonic() - t0, 1),
            "late_ticks_over_20ms": after["late_over_20ms"] - before["late_over_20ms"],
            "late_ticks_over_100ms": after["late_over_100ms"] - before["late_over_100ms"],
            "probes_missed": {k: probes.missed[k] - missed0[k] for k in probes.missed},
            "rss_kib": [rss0, gw.rss_kib()]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sip", type=int, default=100000, help="SIP inputs (80%% UDP, 10%% TCP, 10%% TLS)")
    ap.add_argument("--h225", type=int, default=50000, help="H.225.0 call signalling inputs")
    ap.add_argument("--ras", type=int, default=50000, help="RAS inputs")
    ap.add_argument("--seed", type=int, default=4475)
    ap.add_argument("--rate", type=float, default=2000.0, help="inputs per second at most (0: as fast as possible)")
    ap.add_argument("--probe-every", type=int, default=500)
    ap.add_argument("--rfc4475", type=Path, default=REPO.parent / "shared" / "rfc4475")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--memory-rounds", type=int, default=0,
                    help="then run the SIP load this many times more, measuring memory 40 s after each")
    args = ap.parse_args(argv)
    rnd = random.Random(args.seed)
    random.seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="cau-fuzz-") as tmp:
        gw = Gateway(Path(tmp))
        probes = Probes(gw)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((HOST, 0))
        results: dict = {}
        try:
            sip_t = sip_templates(gw.ports["sip"], args.rfc4475)
            h225_t = h225_templates(gw.ports["h323"])
            ras_t = ras_templates(gw.ports["ras"])
            for t in sip_t:               # warm up: every parser and module loaded before measuring
                send_udp(udp, t, gw.ports["sip"])
            for t in h225_t:
                send_tcp(t, gw.ports["h323"])
            for t in ras_t:
                send_udp(udp, t, gw.ports["ras"])
            time.sleep(2.0)
            drain(udp)
            probes.run()
            rss0 = gw.rss_kib()

            def sip(i: int) -> None:
                data = mutate(rnd.choice(sip_t), rnd, text=True)
                if i % 10 == 9:
                    send_tcp(data, gw.ports["sip"])
                elif i % 10 == 8:
                    send_tcp(data, gw.ports["sip_tls"], tls=True)
                else:
                    send_udp(udp, data, gw.ports["sip"])
                if i % 200 == 0:
                    drain(udp)

            def h225(i: int) -> None:
                send_tcp(mutate(rnd.choice(h225_t), rnd, text=False), gw.ports["h323"])

            def ras_(i: int) -> None:
                send_udp(udp, mutate(rnd.choice(ras_t), rnd, text=False), gw.ports["ras"])
                if i % 200 == 0:
                    drain(udp)

            results["sip"] = phase("sip", args.sip, gw, probes, sip, args.rate, args.probe_every)
            results["h225"] = phase("h225", args.h225, gw, probes, h225, min(args.rate, 500) or 500,
                                    args.probe_every)
            results["ras"] = phase("ras", args.ras, gw, probes, ras_, args.rate, args.probe_every)
            if args.memory_rounds:
                # Flat memory: what the inputs leave behind once their transactions have ended (Timer H,
                # 32 s) — the same SIP load again must not need more.
                rounds = []
                for _ in range(args.memory_rounds):
                    time.sleep(40)
                    rounds.append(gw.rss_kib())
                    phase("sip", args.sip, gw, probes, sip, args.rate, args.probe_every)
                time.sleep(40)
                rounds.append(gw.rss_kib())
                results["rss_after_each_sip_round_kib"] = rounds
                print("RSS after each round of the same SIP load, 40 s later (KiB):", rounds)
            time.sleep(1.0)
            results["rss_kib"] = {"after_warm_up": rss0, "end": gw.rss_kib()}
            results["alive"] = gw.proc.poll() is None and gw.healthy()
            st = gw.status()
            results["max_lateness_ms"] = st["media"]["clock"].get("max_lateness_ms")
        finally:
            rc = gw.stop()
            log = gw.log()
        results["exit_code"] = rc
        results["tracebacks"] = log.count("Traceback (most recent call last)")
        missed = sum(v for r in results.values() if isinstance(r, dict) and "probes_missed" in r
                     for v in r["probes_missed"].values())
        results["ok"] = bool(results.get("alive")) and missed == 0 and results["tracebacks"] == 0
        for name in ("sip", "h225", "ras"):
            r = results.get(name)
            if r:
                print(f"{name:5} {r['inputs']:7d} inputs in {r['seconds']:6.1f} s; ticks > 20 ms late: "
                      f"{r['late_ticks_over_20ms']}, > 100 ms: {r['late_ticks_over_100ms']}; "
                      f"probes missed: {r['probes_missed']}; RSS {r['rss_kib'][0]} -> {r['rss_kib'][1]} KiB")
        print(f"memory (RSS) {results['rss_kib']['after_warm_up']} KiB after warm-up, {results['rss_kib']['end']} KiB "
              f"at the end; tracebacks in the log: {results['tracebacks']}; alive: {results['alive']}")
        if results["tracebacks"]:
            i = log.find("Traceback (most recent call last)")
            print(log[max(0, i - 300):i + 1500])
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
