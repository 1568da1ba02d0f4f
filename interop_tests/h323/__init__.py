"""H.323 conformance cases and the scriptable H.323 test endpoint."""
