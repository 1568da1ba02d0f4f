"""SIP over TLS and SDES-SRTP for any SIP user agent or bridge that offers them (RFC 3261 §26.2,
RFC 5630, RFC 4568, RFC 3711). The caller is baresip (an independent stack); the target's TLS
address is ``--sip-tls-target`` or its host on port 5061 (``sip_tls`` decides NOT APPLICABLE).

What a lab sees: the target's certificate as its handshake showed it (subject, names, issuer,
validity, SHA-256) and, for SRTP, its packets as they travel: of the tagged length and as random as
ciphertext is (≥ 7.8 bits per octet; μ-law speech or a tone stays far below)."""
from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import time
from collections import Counter

import pytest

from interop_tests import evidence
from interop_tests.verdicts import inconclusive, not_applicable

ENTROPY_MIN = 7.8      # bits per octet: ciphertext ~7.98 over a few kB; plaintext μ-law audio ≤ ~7


def _certificate_evidence(shown: dict) -> None:
    for key, label in (("subject", "certificate subject"), ("issuer", "certificate issuer"),
                       ("sha256", "certificate SHA-256"), ("version", "TLS version"), ("cipher", "cipher suite")):
        if shown.get(key):
            evidence.measure(label, shown[key])
    if shown.get("names") is not None:
        evidence.measure("certificate names", ", ".join(shown["names"]) or "(no subjectAltName)")
    evidence.identify("SIP over TLS certificate", "; ".join(x for x in (
        shown.get("subject", ""), "names " + ", ".join(shown["names"]) if shown.get("names") else "",
        f"issued by {shown['issuer']}" if shown.get("issuer") else "",
        f"valid until {shown['not_after']:%Y-%m-%d}" if shown.get("not_after") else "") if x))
    if shown.get("not_after"):
        evidence.measure("certificate valid", f"{shown['not_before']:%Y-%m-%d} to {shown['not_after']:%Y-%m-%d}",
                         expected="includes today")


def test_the_target_takes_a_call_over_tls(target, sip_tls, baresip_factory):
    """TLS-004: baresip calls the target's number over TLS; the call comes up and ends by our BYE.
    The certificate is shown, and must be within its validity period
    (a strict client refuses an expired one)."""
    host, port, shown = sip_tls
    _certificate_evidence(shown)
    media = "RTP"
    for enc in (None, "srtp-mand"):       # a target that requires SRTP refuses plain RTP with 488: offer it
        b = baresip_factory("lab-tls", audio_codecs=("PCMU/8000/1", "PCMA/8000/1", "G722/16000/1"),
                            audio_source=("ausine", 440), media_encryption=enc)
        b.dial(f"sip:{target.room}@{host}:{port};transport=tls")
        ev = b.call_outcome(timeout=15)
        if ev["type"] == "CALL_ESTABLISHED":
            break
        if enc is None and "488" in str(ev.get("param")):
            media = "SRTP (plain RTP was refused with 488)"
            b.stop()
            continue
        pytest.fail(f"the call over TLS did not come up: {ev.get('param')}")
    evidence.measure("media", media)
    time.sleep(2.0)
    b.hangup()
    evidence.measure("call ended", b.wait_closed(timeout=10), expected="by our BYE")
    now = dt.datetime.now(dt.timezone.utc)
    if shown.get("not_after"):
        assert shown["not_before"] <= now <= shown["not_after"], \
            f"the certificate is valid {shown['not_before']:%Y-%m-%d} to {shown['not_after']:%Y-%m-%d}, not today"


def _srtp_payload(packet: bytes) -> bytes:
    """What SRTP encrypts (and the tag after it): the RTP packet less its clear header — 12 octets,
    the CSRCs and, with the X bit, the header extension (RFC 3550 §5.3.1)."""
    at = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10 and len(packet) >= at + 4:
        at += 4 + 4 * int.from_bytes(packet[at + 2:at + 4], "big")
    return packet[at:]


def _entropy(data: bytes) -> float:
    counts = Counter(data)
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def test_the_target_takes_sdes_srtp_over_tls_and_its_rtp_is_encrypted(target, sip_tls, baresip_factory, tmp_path):
    """TLS-005: baresip offers RTP/SAVP with SDES keys (RFC 4568) over TLS and requires SRTP. The
    target must accept it (or refuse with 488: NOT APPLICABLE, it does not offer SRTP), send RTP
    that baresip decrypts without one failure, and whose payload on the wire is ciphertext: the
    packets carry an authentication tag and their payload octets are as random as ciphertext."""
    from interop_tests.peers.capture import LoopbackCapture

    host, port, _ = sip_tls
    b = baresip_factory("lab-srtp", audio_codecs=("PCMU/8000/1", "PCMA/8000/1"), audio_source=("ausine", 440),
                        media_encryption="srtp-mand")
    pcap = tmp_path / "srtp.pcapng"
    loopback = host.startswith("127.") or host == "::1"
    with LoopbackCapture(f"udp dst portrange {b.rtp_lo}-{b.rtp_hi}", pcap, interface="lo" if loopback else "any"):
        b.dial(f"sip:{target.room}@{host}:{port};transport=tls")
        ev = b.call_outcome(timeout=15)
        if ev["type"] == "CALL_CLOSED":
            why = str(ev.get("param", ""))
            if "488" in why or "415" in why or "Not Acceptable" in why:
                not_applicable(f"the target does not take SRTP over TLS: it answered {why}")
            pytest.fail(f"the SRTP call over TLS did not come up: {why}")
        time.sleep(3.0)
        b.hangup()
        b.wait_closed(timeout=10)
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", "udp.length", "-e", "udp.payload",
                          "-Y", "udp.length > 40"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HOME": str(tmp_path)})
    rows = [line.split("\t") for line in out.stdout.splitlines() if line.count("\t") == 1 and line.split("\t")[1]]
    packets = [bytes.fromhex(p) for _, p in rows]
    rtp = [p for p in packets if len(p) > 12 and p[0] >> 6 == 2 and not 192 <= p[1] <= 223]   # RTCP: PT 200-204
    evidence.measure("SRTP packets from the target", len(rtp), expected="≥ 20 in 3 s to judge")
    if len(rtp) < 20:       # a bridge with no one else in the room may send nothing: nothing to judge
        inconclusive(f"the target sent {len(rtp)} RTP packets in 3 s of the SRTP call: too few to judge")
    payload = b"".join(_srtp_payload(p) for p in rtp[5:205])
    bits = _entropy(payload)
    evidence.measure("payload entropy", round(bits, 3), "bits/octet", expected=f"≥ {ENTROPY_MIN}")
    sizes = Counter(len(p) for p in rtp)
    evidence.measure("packet sizes", ", ".join(f"{n} octets × {c}" for n, c in sizes.most_common(3)))
    failures = b.proc.output.count("failed to decrypt RTP packet")
    evidence.measure("packets baresip could not decrypt", failures, expected="0")
    assert failures == 0, f"baresip could not decrypt {failures} of the target's SRTP packets (wrong key or tag)"
    assert bits >= ENTROPY_MIN, (f"the target's RTP payload has {bits:.2f} bits of entropy per octet "
                                 f"(ciphertext has ≥ {ENTROPY_MIN}): it is not encrypted")
