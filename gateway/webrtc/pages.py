"""The join page and its files (``gateway/webrtc/static``): plain HTML, CSS and JavaScript, no build
step and nothing loaded from another site (the Content-Security-Policy says so to the browser)."""
from __future__ import annotations

from pathlib import Path

from twisted.web import resource, server, static

STATIC = Path(__file__).resolve().parent / "static"
CSP = (b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       b"media-src 'self' blob: mediastream:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       b"form-action 'self'")


def _secure_headers(request: server.Request) -> None:
    request.setHeader(b"content-security-policy", CSP)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"permissions-policy", b"camera=(self), microphone=(self), display-capture=()")
    request.setHeader(b"cache-control", b"no-cache")


class JoinPage(resource.Resource):
    """``/join`` and ``/join/<room number>``: the same page; it reads the room from the address."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        _secure_headers(request)
        if len(request.postpath) > 1 or any(not p for p in request.postpath[:-1]):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found: the join page is /join/<room number>\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (STATIC / "join.html").read_bytes()

    render_HEAD = render_GET


class SecureFiles(static.File):
    """A folder of page files: no listing, the page's security headers (``headers``) on each file,
    text types with a charset. Subfolders are served by the same class (Twisted's createSimilarFile)."""

    headers = staticmethod(_secure_headers)

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)
        self.contentTypes.update({".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                                  ".html": "text/html; charset=utf-8"})

    def directoryListing(self) -> resource.Resource:  # noqa: N802 (Twisted)
        return resource.NoResource("not found")

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        self.headers(request)
        return super().render_GET(request)


def join_page() -> resource.Resource:
    return JoinPage()


def static_files() -> resource.Resource:
    return SecureFiles(str(STATIC))
