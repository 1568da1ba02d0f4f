"""H.235.6 media encryption with an H.323 room system (the test endpoint with its own AES code,
interop_tests/peers/h235_media.py): DH-1024 in SETUP/CONNECT, keys in H.245, AES-128 RTP; tshark
reads the tokens and the h235Media channels, and the wire carries no clear tone."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.request

import pytest

from interop_tests.peers.capture import LoopbackCapture
from interop_tests.peers.rtp_participant import band_level_db, noise_floor_db, ulaw_to_pcm, wait_for_tone


def _roster(cau, room: str) -> list[dict]:
    with urllib.request.urlopen(f"http://{cau.host}:{cau.http_port}/api/status", timeout=5) as r:
        return next((x["roster"] for x in json.loads(r.read())["rooms"] if x["id"] == room), [])


def _tshark(pcap, port: int, fields: list[str], display: str, home) -> list[list[str]]:
    # TPKT is found on any port by tshark's heuristics ("-d tcp.port==N,tpkt" matches two dissectors)
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", display,
                          "-T", "fields", *sum((["-e", f] for f in fields), [])],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(home)})
    assert out.returncode == 0, out.stderr[-2000:]
    return [line.split("\t") for line in out.stdout.splitlines() if line.strip()]


def test_an_encrypting_room_system_and_a_plain_one_meet_and_the_wire_shows_h2356(
        cau, h323, h323_endpoint, h323_run, tmp_path):
    enc = h323_endpoint("lab-enc", profile="G711", fast_start=False, tunnelling=True, tone_hz=1000,
                        media_encryption="preferred")
    plain = h323_endpoint("lab-plain", profile="G711", fast_start=True, tunnelling=True, tone_hz=600)
    pcap = tmp_path / "h2356.pcap"

    async def scenario():
        await enc.call(cau.room, h323.host, h323.port)
        await plain.call(cau.room, h323.host, h323.port)
        await asyncio.gather(enc.wait_media(), plain.wait_media())
        return (await wait_for_tone(enc.heard, enc.rx_rate, 600, -30, within=6, window=1.0),
                await wait_for_tone(plain.heard, plain.rx_rate, 1000, -30, within=6, window=1.0))

    with LoopbackCapture(f"tcp port {h323.port} or udp", pcap):
        enc_hears, plain_hears = h323_run(scenario())
        roster = _roster(cau, "open")
        h323_run(enc.hangup())
        h323_run(plain.hangup())
    assert enc_hears > -30, f"the encrypting system does not hear the plain one ({enc_hears:.1f} dB)"
    assert plain_hears > -30, f"the plain system does not hear the encrypting one ({plain_hears:.1f} dB)"
    assert enc.audio.undecryptable == 0
    enc_entry = next(p for p in roster if "lab-enc" in p["name"])
    plain_entry = next(p for p in roster if "lab-plain" in p["name"])
    assert enc_entry["encryption"] == {"signalling": "H.225.0 (TCP)", "media": "H.235.6 AES-128"}, enc_entry
    assert plain_entry["encryption"]["media"] is None
    # the independent dissector: DH tokens in SETUP and CONNECT, h235Media channels with encryptionSync
    tokens = _tshark(pcap, h323.port, ["q931.message_type", "h235.tokenOID"], "h235.tokenOID", tmp_path)
    kinds = {k for row in tokens for k in row[0].split(",")}
    assert {"0x05", "0x07"} <= kinds, tokens                  # SETUP and CONNECT
    assert all("0.0.8.235.0.3.43" in row[1] and "0.0.8.235.0.3.24" in row[1] for row in tokens), tokens
    halfkeys = _tshark(pcap, h323.port, ["h235.halfkey"], "h235.halfkey", tmp_path)
    assert len({row[0] for row in halfkeys}) == 2 and all(len(row[0]) == 256 for row in halfkeys)  # 1024 bits
    media = _tshark(pcap, h323.port, ["h245.synchFlag", "h245.algorithm"], "h245.encryptionSync_element", tmp_path)
    assert len(media) >= 2 and all(row[0] == "120" for row in media), media
    sec = _tshark(pcap, h323.port, ["h245.mediaCapability"], "h245.h235SecurityCapability_element", tmp_path)
    assert sec, "no h235SecurityCapability in the capability sets"
    malformed = _tshark(pcap, h323.port, ["frame.number"], "_ws.malformed && (h225 || h245)", tmp_path)
    assert not malformed, malformed
    # the encrypting system's RTP: payload type 120, and its 1000 Hz tone cannot be read as μ-law
    wire = [p for p in enc.audio.sent_wire if len(p) == 12 + 160]
    assert len(wire) >= 20 and {p[1] & 0x7F for p in wire} == {120}
    # read as μ-law, ciphertext is loud white noise whose 1000 Hz band alone reaches -28 dBFS by chance:
    # judge the tone by how far it stands above the noise floor (a readable tone: 40 dB and more;
    # 300 random payloads: 10 dB at most)
    heard = ulaw_to_pcm(b"".join(p[12:] for p in wire[:20]))
    above = band_level_db(heard, 8000, 1000) - noise_floor_db(heard, 8000)
    assert above < 20, f"the 1000 Hz tone stands {above:.0f} dB above the noise in the encrypted RTP"
    rtp = _tshark(pcap, h323.port, ["rtp.p_type"], f"udp.srcport == {enc.audio.port} && rtp", tmp_path)
    assert len(rtp) > 50 and {row[0] for row in rtp} == {"120"}, rtp[:5]     # on the wire too


def test_a_room_that_requires_encryption_releases_a_plain_room_system_and_takes_an_encrypting_one(
        cau, h323, h323_endpoint, h323_run):
    plain = h323_endpoint("lab-plain2", profile="G711", fast_start=True, tone_hz=600)
    with pytest.raises(RuntimeError, match="cause 31"):
        h323_run(plain.call("7000", h323.host, h323.port))
    assert "requires encrypted media" in cau.log()
    enc = h323_endpoint("lab-enc2", profile="HDX", video=False, fast_start=True, tunnelling=True, tone_hz=700,
                        media_encryption="required")
    h323_run(enc.call("7000", h323.host, h323.port))
    h323_run(enc.wait_media())
    assert enc.call_obj.fast_start in ("none", "refused")      # its channels came through H.245, encrypted
    entry = next(p for p in _roster(cau, "secure") if "lab-enc2" in p["name"])
    assert entry["encryption"]["media"] == "H.235.6 AES-128"
    h323_run(enc.hangup())
