"""SIP dialogs (RFC 3261 §12): the state two user agents share after an INVITE.

A :class:`Dialog` knows its identifiers (Call-ID, local and remote tags), the
CSeq spaces of both directions, the remote target and the route set, and
builds in-dialog requests (BYE, re-INVITE, INFO, UPDATE, ACK for a 2xx).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from gateway.sip.dns import is_ip
from gateway.sip.headers import Headers
from gateway.sip.message import Address, CSeq, Request, Response
from gateway.sip.transport import Peer
from gateway.sip.uri import AbsoluteUri, SipUri, parse_uri

USER_AGENT = "Cau"


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: Address          # our From (as UAC) / To (as UAS) without the tag
    remote_uri: Address
    remote_target: SipUri | AbsoluteUri
    peer: Peer                  # where in-dialog requests go (the remote target's host/port or the first route)
    local_seq: int
    remote_seq: int | None
    route_set: list[Address] = field(default_factory=list)
    secure: bool = False
    confirmed: bool = False

    @classmethod
    def as_uas(cls, invite: Request, local_tag: str, peer: Peer) -> "Dialog":
        """§12.1.1: the dialog a UAS creates when it answers ``invite``."""
        contact = invite.contacts[0].uri if invite.contacts else invite.from_.uri
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_.tag,
            local_uri=_without_tag(invite.to),
            remote_uri=_without_tag(invite.from_),
            remote_target=contact,
            peer=_peer_for(contact, invite.record_routes, peer),
            local_seq=secrets.randbelow(2**16) + 1,
            remote_seq=invite.cseq.seq,
            route_set=list(invite.record_routes),
        )

    @classmethod
    def as_uac(cls, invite: Request, response: Response, peer: Peer) -> "Dialog":
        """§12.1.2: the dialog a UAC creates from a 2xx (or 1xx with a tag) to its INVITE."""
        contact = response.contacts[0].uri if response.contacts else invite.uri
        routes = list(reversed(response.record_routes))
        return cls(
            call_id=invite.call_id,
            local_tag=invite.from_.tag,
            remote_tag=response.to.tag,
            local_uri=_without_tag(invite.from_),
            remote_uri=_without_tag(invite.to),
            remote_target=contact,
            peer=_peer_for(contact, routes, peer),
            local_seq=invite.cseq.seq,
            remote_seq=None,
            route_set=routes,
        )

    @property
    def id(self) -> tuple[str, str, str | None]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def request(self, method: str, local_contact: str, body: bytes = b"", content_type: str | None = None,
                cseq: int | None = None, extra: list[tuple[str, str]] = ()) -> Request:
        """§12.2.1.1: a request within the dialog (a new CSeq unless ``cseq`` is given, as ACK's is)."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        h = Headers()  # the transaction layer adds the top Via
        h.add("Max-Forwards", "70")
        frm = self.local_uri.copy()
        frm.params["tag"] = self.local_tag
        to = self.remote_uri.copy()
        if self.remote_tag:
            to.params["tag"] = self.remote_tag
        h.add("From", str(frm))
        h.add("To", str(to))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", str(CSeq(cseq, method)))
        for r in self.route_set:
            h.add("Route", str(r))
        h.add("Contact", local_contact)
        h.add("User-Agent", USER_AGENT)
        for name, value in extra:
            h.add(name, value)
        if body:
            h.add("Content-Type", content_type or "application/sdp")
        return Request(method, self.remote_target, h, body)

    def accepts(self, request: Request) -> bool:
        """§12.2.2: in-dialog requests must not go backwards in CSeq."""
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and seq <= self.remote_seq:
            return False
        self.remote_seq = seq
        return True


def _without_tag(addr: Address) -> Address:
    a = addr.copy()
    a.params.pop("tag", None)
    return a


def _peer_for(target: SipUri | AbsoluteUri, routes: list[Address], fallback: Peer) -> Peer:
    """Where to send in-dialog requests: the first route, else the remote target (§8.1.2).

    On NAT'd or unresolvable targets the address the dialog came from is the
    best bet; a hostname we cannot use as an IP falls back to it too.
    """
    uri = routes[0].uri if routes else target
    if isinstance(uri, SipUri):
        transport = (uri.params.get("transport") or fallback.transport).upper()
        host = uri.host
        if is_ip(host):
            if uri.scheme == "sips":
                transport = "TLS"
            port = uri.port or (5061 if transport == "TLS" else 5060)
            transport = transport if transport in ("UDP", "TCP", "TLS") else fallback.transport
            # a dialog we started over a verified TLS connection keeps the name its certificate
            # was checked for: the far end's Contact is an address, its certificate names the domain
            name = fallback.name if transport == "TLS" and fallback.transport == "TLS" else None
            return Peer(transport, host, port, name=name)
    return fallback


def parse_target(text: str) -> SipUri | AbsoluteUri:
    return parse_uri(text)
