"""Who is asking, and may they post: session, trusted proxy header, CSRF.

Reads happen behind login too (reports are clinical data). A decision needs an identity (401
without one) and the session's CSRF token (403 without it), so a page on another site cannot make
a logged-in reviewer's browser approve a run.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import quote

import structlog
from fastapi import HTTPException, Request

from cardiomics.errors import InputError

from .accounts import NAME
from .sessions import Session, csrf_ok

log = structlog.get_logger(__name__)

TRUSTED_PROXIES_ENV = "CARDIOMICS_REVIEW_TRUSTED_PROXIES"
DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"
# scope key holding the address of the machine that opened the connection, kept before
# X-Forwarded-For replaces the client address (see app.DirectPeer)
PEER = "cardiomics.peer"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class LoginRequired(Exception):
    """Raised by page handlers: the app answers with a redirect to the login page."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def parse_proxies(value: str | Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks (``10.0.0.5``, ``10.0.0.0/24``, ``::1``), comma-separated or as a list."""
    items = value.split(",") if isinstance(value, str) else list(value)
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise InputError("bad-trusted-proxy", f"{item!r} in {TRUSTED_PROXIES_ENV} is not an IP address or network",
                             hint="list the proxy's addresses, comma-separated, e.g. 127.0.0.1,::1,10.0.0.5") from None
    return tuple(networks)


def is_trusted(peer: str | None, proxies: tuple[Network, ...]) -> bool:
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer.strip("[]"))
    except ValueError:  # not an IP address (a test client's name, a unix socket)
        return False
    return any(address in net for net in proxies)


def session(request: Request) -> Session:
    return request.state.session


def reviewer(request: Request) -> str | None:
    """The reviewer's identity: the trusted proxy header when configured, else the logged-in session."""
    header = request.app.state.user_header
    if header:
        return _proxy_user(request, header)
    return _session_user(request)


def _proxy_user(request: Request, header: str) -> str | None:
    value = request.headers.get(header)
    if value is None:
        return None
    peer = request.scope.get(PEER)
    if not is_trusted(peer, request.app.state.trusted_proxies):
        # anyone who can reach the app directly could otherwise name any reviewer
        log.warning("review user header refused: not from a trusted proxy", header=header, peer=peer)
        raise HTTPException(403, f"the {header} header is accepted only from a trusted proxy, not from {peer or 'an unknown address'}; "
                                 f"list the proxy's address in {TRUSTED_PROXIES_ENV}")
    value = value.strip()
    if not value:
        return None
    if not NAME.match(value):  # the name goes into the audit trail and onto signed reports
        log.warning("review user header refused: not a reviewer name", header=header, peer=peer)
        raise HTTPException(403, f"the {header} header does not hold a reviewer name: use letters, digits "
                                 "and . _ @ - (at most 64 characters)")
    return value


def _session_user(request: Request) -> str | None:
    current = session(request)
    if current.user is None:
        return None
    epoch = request.app.state.accounts.epoch(current.user)
    if epoch is None or epoch != current.epoch:
        # the account was removed or its password replaced since this session began
        log.info("review session revoked", user=current.user, account_exists=epoch is not None)
        request.state.session = Session.new()  # a fresh anonymous session replaces the cookie
        return None
    return current.user


def page_user(request: Request) -> str:
    user = reviewer(request)
    if user is None:
        raise LoginRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return user


def api_user(request: Request) -> str:
    user = reviewer(request)
    if user is None:
        raise HTTPException(401, "log in as a reviewer first", headers={"WWW-Authenticate": "Session"})
    return user


def require_csrf(request: Request, token: str | None) -> None:
    token = token or request.headers.get("x-csrf-token")
    if not csrf_ok(session(request), token):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


def safe_next(path: str | None) -> str:
    """Only local paths: a login link cannot send the reviewer to another site."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")
