"""Calls out over TLS check the far certificate when ``tls_ca`` is set (RFC 5922): the chain must
lead to a CA of that file and the certificate must name the host dialled. Independent peer:
PJSIP (pjsua2) listening for SIP over TLS with certificates a test CA issued."""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.sip.dialout import dial
from gateway.webrtc.tls import TlsError, trust_root
from interop_tests.peers.pjsua import PjsuaAnswerer
from tests.conftest import free_port, wait
from tests.test_run import REPO, gateway  # noqa: F401 - the fixture
from tests.test_sip_dialout import failure_of, gw, poll  # noqa: F401 - the fixture


def _pem(path: Path, obj) -> Path:
    path.write_bytes(obj.public_bytes(serialization.Encoding.PEM) if isinstance(obj, x509.Certificate) else
                     obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _ca(folder: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key, _pem(folder / f"{name.replace(' ', '-')}.pem", cert)


def _leaf(folder: Path, ca, stem: str, names: list[x509.GeneralName]) -> tuple[Path, Path]:
    """A server certificate the CA ``ca`` issued for ``names``: (certificate, key) PEM files."""
    ca_cert, ca_key, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return _pem(folder / f"{stem}.crt", cert), _pem(folder / f"{stem}.key", key)


LOOPBACK_IP = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def test_a_certificate_from_the_trusted_ca_for_the_host_dialled_carries_the_call(gw, tmp_path):  # noqa: F811
    ca = _ca(tmp_path, "So TTTT CA")
    a = PjsuaAnswerer(tls=True, tls_cert=_leaf(tmp_path, ca, "mcu", LOOPBACK_IP), tone=440, codecs=["PCMU"])
    try:
        g = gw(tls_dir=tmp_path / "state")
        g.transport.tls_trust, text = trust_root(str(ca[2]))
        assert text == f"1 CA certificate of {ca[2]}"
        d = dial(g.ua, a.tls_uri, g.spec(), timeout=10)
        leg = wait(d, timeout=15)
        assert leg.encryption["signalling"] == "TLS" and leg.encryption["verified"] == "127.0.0.1", leg.encryption
        conn = g.transport._connections[("TLS", "127.0.0.1", a.tls_port)]
        assert conn.verified_name == "127.0.0.1"                      # checked, for the host dialled
        leg.hangup("test over")                                        # the BYE goes over the same connection
        assert poll(lambda: len(a.results()) == 1, 10), "PJSIP did not see our BYE"
        assert a.results()[0].confirmed
    finally:
        a.stop()


def test_a_certificate_from_another_ca_or_for_another_host_is_refused_before_anything_is_sent(
        gw, tmp_path, caplog):  # noqa: F811
    ours, theirs = _ca(tmp_path, "So TTTT CA"), _ca(tmp_path, "Someone else")
    stranger = PjsuaAnswerer(tls=True, tls_cert=_leaf(tmp_path, theirs, "rogue", LOOPBACK_IP), tone=440,
                             codecs=["PCMU"])
    elsewhere = PjsuaAnswerer(tls=True, tone=440, codecs=["PCMU"],
                              tls_cert=_leaf(tmp_path, ours, "named", [x509.DNSName("mcu.example.vn")]))
    try:
        g = gw(tls_dir=tmp_path / "state")
        g.transport.tls_trust, _ = trust_root(str(ours[2]))
        exc = failure_of(dial(g.ua, stranger.tls_uri, g.spec(), timeout=10))
        assert exc.status == 503 and "not signed by a CA in tls_ca" in exc.reason, exc
        # the right CA, but the certificate names mcu.example.vn and we dialled 127.0.0.1
        exc = failure_of(dial(g.ua, elsewhere.tls_uri, g.spec(), timeout=10))
        assert exc.status == 503 and "is not for 127.0.0.1" in exc.reason, exc
        assert not g.ua.calls and g.ports.in_use == 0 and not g.transport._connections
        assert not g.transport._pending and not g.transport._verified       # nothing waits, nothing kept
        assert stranger.results() == [] and elsewhere.results() == []   # no INVITE reached either
        assert "SIP over TLS: the certificate of 127.0.0.1:" in caplog.text
    finally:
        stranger.stop()
        elsewhere.stop()


def test_without_tls_ca_the_far_certificate_is_not_checked(gw, tmp_path):  # noqa: F811
    ca = _ca(tmp_path, "Someone else")
    a = PjsuaAnswerer(tls=True, tls_cert=_leaf(tmp_path, ca, "any", [x509.DNSName("x.example")]), tone=440,
                      codecs=["PCMU"])
    try:
        g = gw(tls_dir=tmp_path / "state")
        assert g.transport.tls_trust is None
        leg = wait(dial(g.ua, a.tls_uri, g.spec(), timeout=10), timeout=15)    # encrypted, not authenticated
        assert leg.encryption["signalling"] == "TLS" and "verified" not in leg.encryption, leg.encryption
        leg.hangup("test over")
    finally:
        a.stop()


def _tls_server(cert, timeout: float = 10.0, handshake: bool = True):
    """A bare TLS listener on loopback (Python's ssl) that keeps what one connection sends; with
    ``handshake=False`` it accepts TCP and never answers (a far end stuck in the handshake)."""
    import socket
    import ssl
    import threading

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    got: list[bytes] = []

    def serve() -> None:
        lsock.settimeout(timeout)
        try:
            conn, _ = lsock.accept()
        except OSError:
            return
        with conn:
            if not handshake:
                time.sleep(timeout)
                return
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(cert.cert), str(cert.key))
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(timeout)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    got.append(data)
            except (OSError, ssl.SSLError):
                return

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return lsock, got, th


def test_with_tls_ca_unnamed_peers_go_unchecked_and_a_stuck_handshake_is_given_up(gw, tmp_path):  # noqa: F811
    """Only a target we dial (and its dialog) is checked: a message for the address a site called
    from, or its Contact, goes as before (here to a listener whose self-signed certificate no CA
    vouches for). A far end that takes the TCP connection and never finishes the handshake
    fails the dial after connect_timeout with that reason, and nothing is left waiting."""
    from gateway.sip.transport import Peer
    from gateway.webrtc.tls import self_signed
    from tests.conftest import run_for

    ca = _ca(tmp_path, "So TTTT CA")
    g = gw(tls_dir=tmp_path / "state")
    g.transport.tls_trust, _ = trust_root(str(ca[2]))
    lsock, got, th = _tls_server(self_signed(tmp_path / "site", ["127.0.0.1"]))
    try:
        port = lsock.getsockname()[1]
        g.transport.send_raw(b"OPTIONS sip:site@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n",
                             Peer("TLS", "127.0.0.1", port))
        assert poll(lambda: bool(got), 10), "an unnamed TLS peer was not reached"
        assert got[0].startswith(b"OPTIONS sip:site@")
    finally:
        lsock.close()
        th.join(5)
    g.transport.connect_timeout = 1.0
    lsock, _, th = _tls_server(None, timeout=6, handshake=False)
    try:
        exc = failure_of(dial(g.ua, f"sip:mcu@127.0.0.1:{lsock.getsockname()[1]};transport=tls", g.spec(), timeout=10))
        assert exc.status == 503 and "did not finish in 1 s" in exc.reason, exc
        run_for(0.2)
        assert not g.transport._pending and not g.transport._verified and not g.ua.calls
    finally:
        lsock.close()
        th.join(8)


def test_the_banner_and_status_say_what_calls_out_over_tls_are_checked_against(gateway, tmp_path):  # noqa: F811
    gw = gateway("--no-watch")
    assert "calls out over TLS are encrypted but the far certificate is not checked (set tls_ca" in gw.stdout.read_text()
    assert json.loads(gw.get("/api/status")[2])["security"]["tls_verify"] is None
    assert gw.stop() == 0
    ca = _ca(tmp_path, "So TTTT CA")
    gw = gateway("--no-watch", config=f"tls_ca: {ca[2].name}\n")       # relative to the settings file
    assert f"calls out over TLS check the far certificate against 1 CA certificate of {ca[2]}" in gw.stdout.read_text()
    assert json.loads(gw.get("/api/status")[2])["security"]["tls_verify"] == f"1 CA certificate of {ca[2]}"
    assert gw.stop() == 0


def test_tls_ca_that_cannot_be_used_stops_the_start_with_one_line(tmp_path):
    with pytest.raises(TlsError, match="holds no PEM certificate"):
        trust_root(str(_pem_text(tmp_path / "empty.pem", "not a certificate\n")))
    cfg = tmp_path / "cau.yaml"
    cfg.write_text("bind: 127.0.0.1\ntls_ca: missing-ca.pem\n")
    r = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(cfg), "--http-port", str(free_port()),
                        "--sip-port", "0", "--h323-port", "0", "--ras-port", "0", "--https-port", "0",
                        "--sip-tls-port", "0"],
                       capture_output=True, text=True, timeout=30, cwd=tmp_path,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode != 0
    assert re.search(rf"tls_ca: cannot read {re.escape(str(tmp_path))}/missing-ca\.pem: No such file", r.stderr), \
        r.stderr[-2000:]


def _pem_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_target_by_name_is_checked_for_that_name_not_the_srv_target_or_address(gateway, tmp_path):  # noqa: F811
    """RFC 5922 §4: dialling ``…@mcu.example.vn;transport=tls`` where DNS's SRV record points at
    sip1.mcu.example.vn (127.0.0.1), the certificate must name mcu.example.vn. PJSIP with one that
    names only mcu.example.vn is called; one that names only the SRV target is refused."""
    from tests.test_dns import Dnsmasq, _invite

    ca = _ca(tmp_path, "So TTTT CA")
    right = PjsuaAnswerer(tls=True, tone=440, codecs=["PCMU"],
                          tls_cert=_leaf(tmp_path, ca, "domain", [x509.DNSName("mcu.example.vn")]))
    wrong = PjsuaAnswerer(tls=True, tone=440, codecs=["PCMU"],
                          tls_cert=_leaf(tmp_path, ca, "srv-target", [x509.DNSName("sip1.mcu.example.vn")]))
    d = None
    try:
        d = Dnsmasq([f"--srv-host=_sips._tcp.mcu.example.vn,sip1.mcu.example.vn,{right.tls_port},10,10",
                     f"--srv-host=_sips._tcp.other.example.vn,sip1.mcu.example.vn,{wrong.tls_port},10,10",
                     "--host-record=sip1.mcu.example.vn,127.0.0.1"])
        gw = gateway("--no-watch", "--rtp-ports", "49400-49599",
                     config=f"dns_servers: [\"{d.server}\"]\ntls_ca: {ca[2].name}\n")
        body = _invite(gw, "sip:pjsua@mcu.example.vn;transport=tls")
        assert body["protocol"] == "sip", body
        roster = [p for r in json.loads(gw.get("/api/status")[2])["rooms"] for p in r["roster"]]
        assert [p["encryption"].get("verified") for p in roster] == ["mcu.example.vn"], roster   # shown as checked
        with pytest.raises(AssertionError, match="is not for other.example.vn"):
            _invite(gw, "sip:pjsua@other.example.vn;transport=tls")
        assert wrong.results() == []                                   # no INVITE reached it
    finally:
        right.stop()
        wrong.stop()
        if d is not None:
            d.stop()
    log = gw.stderr.read_text()
    assert "the certificate of 127.0.0.1:%d is not for other.example.vn" % wrong.tls_port in log, log[-3000:]
    assert gw.stop() == 0
