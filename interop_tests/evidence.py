"""What a case keeps for the report, beside its verdict: a capture of its own traffic, the message
sequence read back from that capture, the measurements it judged and the logs of the peers it
started.

The conftest's ``case_evidence`` fixture opens a :class:`CaseEvidence` for every case when the suite
runs with ``--evidence-dir`` (``cau conformance`` always gives one): a folder per case, a tshark
capture filtered to the target's addresses and ports, and at the end ``evidence.json`` with the
ladder (SIP, H.225.0 call signalling and RAS, H.245 messages from the capture), the measurements
and the files. Cases and the helpers they share report what they judged through :func:`measure`
(a value, what was expected, and a series a person would rather look at as a plot), facts about
the target through :func:`identify` (an H.225.0 vendor, a User-Agent) and files through
:func:`attach`; without an open case these do nothing, so a plain ``pytest`` run costs nothing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the case now running (one at a time: the suite is not run in parallel)
CURRENT: "CaseEvidence | None" = None

#: messages kept for a ladder: beyond that the capture itself is the evidence
LADDER_MAX = 400
#: a case's capture stops growing at this size (kB): a long video case must not fill the disk
CAPTURE_KB = 16384


@dataclass
class CaseEvidence:
    folder: Path
    case_id: str
    test: str
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    ladder: list[dict[str, Any]] = field(default_factory=list)
    capture: str | None = None
    capture_note: str = ""
    target_ports: list[int] = field(default_factory=list)

    def measure(self, name: str, value: Any, unit: str = "", expected: str = "",
                series: list[tuple[float, float]] | None = None) -> None:
        entry: dict[str, Any] = {"name": name, "value": _plain(value), "unit": unit, "expected": expected}
        if series:
            entry["series"] = [[round(float(t), 3), round(float(v), 2)] for t, v in series[-2000:]]
        self.measurements[name] = entry           # the last judgement of a name is the one kept

    def _free_name(self, name: str) -> Path:
        name = _safe(name)
        stem, dot, ext = name.rpartition(".")
        n, dest = 1, self.folder / name
        while dest.exists():                      # two peers' stdout.log
            n += 1
            dest = self.folder / (f"{stem}-{n}.{ext}" if dot else f"{name}-{n}")
        return dest

    def keep_text(self, name: str, text: str) -> str:
        dest = self._free_name(name)
        dest.write_text(text, encoding="utf-8")
        self.files.append(dest.name)
        return dest.name

    def attach(self, path: str | os.PathLike, name: str | None = None) -> str | None:
        src = Path(path)
        if not src.is_file():
            return None
        dest = self._free_name(name or src.name)
        try:
            with src.open("rb") as f, dest.open("wb") as out:
                out.write(f.read(4 * 1024 * 1024))   # a runaway log is cut at 4 MiB
        except OSError:
            return None
        self.files.append(dest.name)
        return dest.name

    def save(self) -> None:
        doc = {"case": self.case_id, "test": self.test, "capture": self.capture, "capture_note": self.capture_note,
               "ladder": self.ladder, "measurements": list(self.measurements.values()),
               "identity": self.identity, "files": self.files,
               "target_ports": self.target_ports}
        (self.folder / "evidence.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    try:
        return round(float(value), 3)
    except (TypeError, ValueError):
        return str(value)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)[:120] or "file"


def folder_name(case_id: str, param: str | None) -> str:
    return _safe(case_id + (f"-{param}" if param else ""))


def measure(name: str, value: Any, unit: str = "", expected: str = "",
            series: list[tuple[float, float]] | None = None) -> None:
    """Keep a measurement the case judged (nothing when no case is open)."""
    if CURRENT is not None:
        CURRENT.measure(name, value, unit, expected, series)


def expect(name: str, expected: str) -> None:
    """Say what a measurement already kept was judged against."""
    if CURRENT is not None and name in CURRENT.measurements:
        CURRENT.measurements[name]["expected"] = expected


def identify(key: str, value: str) -> None:
    """A fact about the target (its H.225.0 vendor, its User-Agent) for the report's header."""
    if CURRENT is not None and value:
        CURRENT.identity[key] = value[:200]


def picture(rgb: Any, name: str) -> None:
    """Keep a decoded picture (an RGB array) as a PNG beside the case's capture."""
    if CURRENT is None or rgb is None:
        return
    import av

    path = CURRENT.folder / _safe(name if name.endswith(".png") else name + ".png")
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "rgb24"
    data = b"".join(bytes(p) for p in codec.encode(frame))
    path.write_bytes(data)
    CURRENT.files.append(path.name)


def attach(path: str | os.PathLike, name: str | None = None) -> None:
    if CURRENT is not None:
        CURRENT.attach(path, name)


# ----------------------------------------------------------------------------- the capture, read back
def capture_filter(host: str, tcp_ports: list[int], udp_ports: list[int], udp_range: tuple[int, int] | None,
                   loopback: bool, quiet_tcp: list[int] = ()) -> str:
    """A BPF filter for the case's traffic. A target on another machine: everything to and from it.
    On loopback: all TCP (an H.245 connection's port is chosen during the call) but ``quiet_tcp``
    (the status page the suite polls), the target's UDP signalling ports and its media range (or,
    when the range is not known, every UDP datagram that can carry media)."""
    if not loopback:
        return f"host {host}"
    tcp = "tcp" + "".join(f" and not port {p}" for p in sorted(set(quiet_tcp)) if p)
    parts = [f"({tcp})"] + [f"udp port {p}" for p in sorted(set(udp_ports)) if p]
    if udp_range:
        parts.append(f"udp portrange {udp_range[0]}-{udp_range[1]}")
    else:
        parts.append("(udp and greater 60)")
    return " or ".join(parts)


_FIELDS = ["frame.time_relative", "ip.src", "ipv6.src", "tcp.srcport", "udp.srcport", "ip.dst", "ipv6.dst",
           "tcp.dstport", "udp.dstport", "_ws.col.Protocol", "_ws.col.Info"]


def read_ladder(pcap: Path, sip_ports: list[int], ras_ports: list[int], limit: int = LADDER_MAX) -> list[dict[str, Any]]:
    """The signalling messages in ``pcap`` as (time, from, to, protocol, summary), oldest first:
    SIP (on the target's ports, any transport tshark can read), H.225.0 call signalling and RAS,
    H.245 (tunnelled or on its own connection, found through the H.225.0 messages that name it)."""
    tshark = shutil.which("tshark")
    if tshark is None or not pcap.exists():
        return []
    args = [tshark, "-n", "-r", str(pcap)]
    for p in sorted(set(sip_ports)):
        args += ["-d", f"udp.port=={p},sip", "-d", f"tcp.port=={p},sip"]
    for p in sorted(set(ras_ports)):
        args += ["-d", f"udp.port=={p},h225"]
    args += ["-Y", "sip || h225 || h245 || (q931 && !h225)", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for f in _FIELDS:
        args += ["-e", f]
    with tempfile.TemporaryDirectory() as home:                # tshark's profile stays out of the user's home
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=120,
                                 env={**os.environ, "HOME": home}).stdout
        except (OSError, subprocess.TimeoutExpired):
            return []
    rows = []
    for line in out.splitlines():
        f = (line.split("\t") + [""] * len(_FIELDS))[:len(_FIELDS)]
        t, s4, s6, sport_t, sport_u, d4, d6, dport_t, dport_u, proto, info = f
        src = _addr(s4 or s6, sport_t or sport_u)
        dst = _addr(d4 or d6, dport_t or dport_u)
        try:
            when = round(float(t), 3)
        except ValueError:
            continue
        rows.append({"t": when, "from": src, "to": dst, "protocol": proto, "message": _summary(proto, info)})
        if len(rows) >= limit:
            break
    return rows


def _addr(host: str, port: str) -> str:
    host = host.split(",")[0]
    port = port.split(",")[0]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _summary(proto: str, info: str) -> str:
    info = re.sub(r"\s+", " ", info).strip()
    if info.startswith("Request: "):
        info = info[len("Request: "):]
    elif info.startswith("Status: "):
        info = info[len("Status: "):]
    info = re.sub(r"\|\s*$", "", info).strip()
    return info[:160]
