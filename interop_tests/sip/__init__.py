"""SIP conformance tests against the gateway, driven by independent peers
(sipp, baresip, pjsua2: see ``interop_tests.peers``). Fixtures: ``conftest.py``."""
