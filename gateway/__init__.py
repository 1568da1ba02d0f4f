"""Cầu: a SIP / H.323 / WebRTC interoperability gateway and conferencing bridge."""

__version__ = "0.1.0"
