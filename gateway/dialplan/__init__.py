"""Dial plan: (dialed string, caller, protocol) -> route.  Pure: no I/O beyond reading its file.

See docs/dialplan.md for the file format.
"""
from .holder import DialPlanHolder
from .loader import load_dialplan, parse_dialplan
from .model import EndpointSpec, RoomSpec, RouteResult, RouteSpec, TemplateSpec, normalise
from .plan import DialPlan
from .problems import DialPlanError, Problem

__all__ = [
    "DialPlan",
    "DialPlanError",
    "DialPlanHolder",
    "EndpointSpec",
    "Problem",
    "RoomSpec",
    "RouteResult",
    "RouteSpec",
    "TemplateSpec",
    "load_dialplan",
    "normalise",
    "parse_dialplan",
]
