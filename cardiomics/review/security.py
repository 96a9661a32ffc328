"""Who is asking, and may they post: session, trusted proxy header, CSRF.

Reads happen behind login too (reports are clinical data). A decision needs an identity (401
without one) and the session's CSRF token (403 without it), so a page on another site cannot make
a logged-in reviewer's browser approve a run.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import HTTPException, Request

from .sessions import Session, csrf_ok


class LoginRequired(Exception):
    """Raised by page handlers: the app answers with a redirect to the login page."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def session(request: Request) -> Session:
    return request.state.session


def reviewer(request: Request) -> str | None:
    """The reviewer's identity: the trusted proxy header when configured, else the logged-in session."""
    header = request.app.state.user_header
    if header:
        value = (request.headers.get(header) or "").strip()
        return value or None
    return session(request).user


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
