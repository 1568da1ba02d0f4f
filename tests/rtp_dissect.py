"""tshark as the independent reader of the RTP video we packetize: one helper for every payload format."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterable

import pytest

from tests.test_h323_q931 import write_pcap


def dissect_rtp(packets: Iterable[tuple[int, int, bool, bytes]], pt: int, dissector: str | None,
                fields: list[str], *, port: int = 5004,
                allow: Callable[[str], bool] = lambda line: False) -> list[list[str]]:
    """Write ``(seq, ts, marker, payload)`` packets as RTP (payload type ``pt``) to a pcap, have
    tshark decode them (``dissector`` for the dynamic payload type; None: tshark's own for a static
    one), assert that no packet is malformed or carries an error (``allow`` excuses a line), and
    return the ``fields`` of every packet the dissector read."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("tshark is not installed (scripts/install-test-deps.sh installs it)")
    pkts = [(port, struct.pack("!BBHII", 0x80, (0x80 if m else 0) | pt, seq, ts, 0x1234) + payload)
            for seq, ts, m, payload in packets]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rtp.pcap")
        write_pcap(path, pkts)
        env = dict(os.environ, HOME=tmp)                # no personal Wireshark profile
        args = [tshark, "-n", "-r", path, "-d", f"udp.port=={port},rtp"]
        if dissector:
            args += ["-d", f"rtp.pt=={pt},{dissector}"]
        bad = subprocess.run(args + ["-Y", "_ws.malformed || _ws.expert.severity >= error"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert bad.returncode == 0, bad.stderr
        flagged = [line for line in bad.stdout.splitlines() if line.strip() and not allow(line)]
        assert not flagged, "tshark flags malformed/error packets:\n" + "\n".join(flagged)
        name = dissector or "rtp"
        cols = [a for f in fields for a in ("-e", f)]
        seen = subprocess.run(args + ["-Y", name, "-T", "fields", *cols], capture_output=True, text=True,
                              env=env, timeout=60)
    assert seen.returncode == 0, seen.stderr
    rows = [line.split("\t") for line in seen.stdout.splitlines()]
    assert len(rows) == len(pkts), f"tshark read {len(rows)} of {len(pkts)} packets as {name}"
    return rows
