"""The ``cau`` command (also ``python -m gateway``).

Exit codes: 0 success; 2 invalid input (bad dial plan, bad settings, bad
flags); 3 the gateway cannot start (a port in use); conformance passes
pytest's own code through (0 all passed, 1 failures).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from gateway import __version__


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cau",
        description="Cầu: SIP / H.323 / WebRTC interoperability gateway and conferencing bridge.",
    )
    p.add_argument("--version", action="version", version=f"cau {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="start the gateway", description="Start the gateway and serve until SIGINT/SIGTERM; SIGHUP reloads the dial plan.")
    run.add_argument("--config", metavar="FILE", help="settings file (YAML); flags override it")
    run.add_argument("--dialplan", metavar="FILE", help="dial plan (default: the shipped dialplans/default.yaml)")
    run.add_argument("--bind", metavar="ADDR", help="address to listen on (default 0.0.0.0)")
    run.add_argument("--advertise", metavar="ADDR", help="address written into SDP and SIP Contact (default: the bind address)")
    run.add_argument("--sip-port", type=int, metavar="N", help="SIP port (default 5060)")
    run.add_argument("--h323-port", type=int, metavar="N", help="H.225.0 call signalling port (default 1720)")
    run.add_argument("--ras-port", type=int, metavar="N", help="H.225.0 RAS gatekeeper port (default 1719)")
    run.add_argument("--http-port", type=int, metavar="N", help="HTTP status/API port (default 8080; 0 picks a free one)")
    run.add_argument("--sip-tls-port", type=int, metavar="N",
                     help="SIP over TLS port (default 5061; 0 picks a free one)")
    run.add_argument("--https-port", type=int, metavar="N", help="HTTPS port of the join page and WHIP/WHEP (default 8443; 0 picks a free one)")
    run.add_argument("--rtp-ports", metavar="LO-HI", help="UDP port range for media (default 16384-32767)")
    run.add_argument("--no-watch", action="store_true", help="do not reload the dial plan when its file changes (SIGHUP still does)")
    run.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    run.add_argument("--log-format", choices=("text", "json"), default="text",
                     help="stderr log lines as text (default) or one JSON object per line (journald, Loki, ELK)")

    dp = sub.add_parser("dialplan", help="check a dial plan or try a number against it", description="Dial plan tools.")
    dsub = dp.add_subparsers(dest="dialplan_command", metavar="SUBCOMMAND")
    chk = dsub.add_parser("check", help="validate a dial plan", description="Validate a dial plan: exit 0 with a summary, or every problem as FILE:LINE:COL: message and exit 2.")
    chk.add_argument("file", metavar="FILE")
    chk.add_argument("--config", metavar="FILE", help="the settings the gateway runs with (dns: false makes host "
                                                      "names in dial targets an error)")
    chk.add_argument("--no-dns", action="store_true", help="check as for a gateway with dns: false")
    rt = dsub.add_parser("route", help="dry-run a dialed number", description="Show which rule a dialed number matches and where it goes.")
    rt.add_argument("file", metavar="FILE")
    rt.add_argument("dialed", metavar="DIALED", help="number, alias or URI (sip:8000@host)")
    rt.add_argument("--from", dest="caller", metavar="ALIAS", help="caller alias or number")
    rt.add_argument("--protocol", choices=("sip", "h323", "webrtc"), help="protocol the call arrives on")

    conf = sub.add_parser("conformance", help="run the interop conformance suite", description="Run the conformance suite (interop_tests) with pytest and write a JUnit XML and an HTML report.")
    conf.add_argument("--list", action="store_true", help="list the test cases and exit")
    conf.add_argument("--peers-check", action="store_true",
                      help="only check that the peers the suite drives are installed (one line each; exit 3 if not)")
    conf.add_argument("-k", dest="keyword", metavar="EXPR", help="only run cases matching this pytest -k expression")
    conf.add_argument("--report", metavar="DIR", help="write junit.xml and report.html into DIR (default ./conformance-report)")
    conf.add_argument("--sip-target", metavar="HOST:PORT", help="test this SIP system instead of a Cầu the suite starts itself")
    conf.add_argument("--sip-tls-target", metavar="HOST:PORT",
                      help="its SIP over TLS address (default: its host, port 5061, when a TLS handshake succeeds)")
    conf.add_argument("--room", metavar="NUMBER", help="a room without PIN on the target (default 1000)")
    conf.add_argument("--pin-room", metavar="NUMBER", help="a room with a PIN on the target (default 2000)")
    conf.add_argument("--pin", metavar="DIGITS", help="that room's PIN (default 2468)")
    conf.add_argument("--profile", default="cau",
                      choices=("sip-ua", "sip-registrar", "sip-mcu", "h323-terminal", "h323-gatekeeper", "h323-mcu",
                               "whip-server", "cau"),
                      help="the kind of system under test; chooses the cases (default cau: every case, against "
                           "a Cầu the suite starts)")
    conf.add_argument("--h323-target", metavar="HOST:PORT", help="an H.323 system's call signalling address")
    conf.add_argument("--gatekeeper", metavar="HOST:PORT", help="an H.323 gatekeeper's RAS address")
    conf.add_argument("--whip-target", metavar="URL", help="a WHIP server's base URL")
    conf.add_argument("--video-room", metavar="NUMBER", help="a video room in 2x2 continuous presence (default 6000)")
    conf.add_argument("--h323-alias", metavar="ALIAS", help="an alias the gatekeeper lets the suite register")
    conf.add_argument("--user", metavar="USER", help="an account on the SIP registrar (registration cases)")
    conf.add_argument("--password", metavar="PASSWORD", help="that account's password")
    return p


def _settings_from_args(args: argparse.Namespace):
    from gateway.config import ConfigError, Settings, check_bind, check_port, load_settings, parse_port_range

    settings = load_settings(args.config) if args.config else Settings()
    changes: dict = {}
    try:
        if args.dialplan:
            changes["dialplan"] = Path(args.dialplan)
        if args.bind:
            changes["bind"] = check_bind(args.bind)
        if args.advertise:
            changes["advertise"] = check_bind(args.advertise)
        for flag, key in (("sip_port", "sip_port"), ("h323_port", "h323_port"), ("ras_port", "ras_port"), ("http_port", "http_port"),
                          ("https_port", "https_port"), ("sip_tls_port", "sip_tls_port")):
            value = getattr(args, flag)
            if value is not None:
                changes[key] = check_port("--" + flag.replace("_", "-"), value)
        if args.rtp_ports:
            changes["rtp_ports"] = parse_port_range(args.rtp_ports)
        if args.no_watch:
            changes["watch_dialplan"] = False
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    return replace(settings, **changes)


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError

    from gateway import logs

    logs.setup(args.log_format, args.verbose)
    try:
        settings = _settings_from_args(args)
    except ConfigError as exc:
        print(f"cau: settings are not valid:\n{exc}", file=sys.stderr)
        return 2
    from gateway.app import run

    return run(settings)


def _codec_names() -> set[str] | None:
    from gateway.catalogue import default_catalogue

    return default_catalogue().names()


def _cmd_dialplan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from gateway.dialplan import DialPlanError, load_dialplan

    if args.dialplan_command is None:
        parser.parse_args(["dialplan", "--help"])
        return 2
    dns = True
    if getattr(args, "no_dns", False):
        dns = False
    elif getattr(args, "config", None):
        from gateway.config import ConfigError, load_settings

        try:
            dns = load_settings(args.config).dns
        except ConfigError as exc:
            print(f"cau: settings are not valid:\n{exc}", file=sys.stderr)
            return 2
    try:
        plan = load_dialplan(args.file, codec_names=_codec_names(), dns=dns)
    except DialPlanError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.file}: {len(exc.problems)} problem(s); the dial plan is not valid", file=sys.stderr)
        return 2
    if args.dialplan_command == "check":
        print(f"{args.file}: ok: {plan.summary()}")
        return 0
    result = plan.route(args.dialed, caller=args.caller, protocol=args.protocol)
    print(f"dialed:  {args.dialed}")
    print(f"matched: {result.rule}")
    if result.kind == "room":
        room = result.room
        print(f"result:  room {room.id} \"{room.name}\"" + (f" (from template {room.template}, created on first call)" if room.template else ""))
        print(f"         layout {room.layout}, max {room.max_participants} participants, PIN {'required' if room.pin else 'none'}")
        if room.audio_codecs:
            print(f"         audio codecs: {', '.join(room.audio_codecs)}")
        if room.video_codecs:
            res = f", max {room.max_resolution[0]}x{room.max_resolution[1]}" if room.max_resolution else ""
            rate = f", max {room.max_bitrate_kbps} kbit/s" if room.max_bitrate_kbps else ""
            print(f"         video codecs: {', '.join(room.video_codecs)}{res}{rate}")
        if room.cascade:
            print(f"         cascades out by dialing {room.cascade}")
    elif result.kind == "dial":
        print(f"result:  dial out to {result.target}")
    elif result.kind == "reject":
        print(f"result:  reject with {result.status}: {result.reason}")
    else:
        ep = plan.endpoint(args.dialed)
        if ep is None:
            print(f"result:  no route ({result.status}): {result.reason}")
            return 1
        print(f"result:  endpoint {ep.alias} \"{ep.name}\" ({ep.protocol}"
              + (f", number {ep.number}" if ep.number else "") + ")")
        if ep.protocol in ("sip", "h323"):
            print(f"         a call is put through to where it is registered "
                  f"({'the SIP registrar' if ep.protocol == 'sip' else 'the gatekeeper'}), in a two-party room")
        else:
            print(f"         it joins by itself ({ep.protocol}): it cannot be called")
    if result.captures:
        print("captures: " + ", ".join(f"{k}={v}" for k, v in result.captures.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "dialplan":
        return _cmd_dialplan(args, parser)
    if args.command == "conformance":
        from gateway.conformance import run_conformance

        target = []
        for flag in ("sip_target", "sip_tls_target", "room", "pin_room", "pin", "h323_target", "gatekeeper", "whip_target", "video_room",
                     "h323_alias", "user", "password"):
            value = getattr(args, flag)
            if value:
                target += ["--" + flag.replace("_", "-"), value]
        return run_conformance(list_only=args.list, keyword=args.keyword, report_dir=args.report, extra=target,
                               peers_check=args.peers_check, profile=args.profile)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
