"""The operator's API token: every state-changing HTTP request carries it (issue 12, item 4).

A token from the settings file (``api_token``) is used as it is. Without one, a token is made on
first start (24 random bytes, hex), kept in ``state_dir/api_token`` (readable by the gateway's
user only) and printed once, in the start banner of that first start; later starts read the
file and only say where it is. So a fresh gateway never accepts operator actions from anyone who
can reach its HTTP port."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.files import write_private


class TokenError(Exception):
    pass


@dataclass(frozen=True)
class ApiToken:
    value: str
    source: str           # "settings" or the file it is kept in
    made_now: bool = False


def api_token(configured: str, state_dir: Path) -> ApiToken:
    if configured:
        return ApiToken(configured, "settings")
    path = state_dir / "api_token"
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the API token in {path}: {exc}") from None
    if len(text) >= 16 and not any(c.isspace() for c in text):
        return ApiToken(text, str(path))
    value = secrets.token_hex(24)
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, (value + "\n").encode("ascii"))
    except OSError as exc:
        raise TokenError(f"cannot keep the API token in {path}: {exc.strerror} "
                         "(set state_dir, or api_token, in the settings)") from None
    return ApiToken(value, str(path), made_now=True)
