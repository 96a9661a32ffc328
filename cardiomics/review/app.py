"""The review app factory: one ``Runs`` per app, signed sessions, security headers, error pages.

Why a factory: tests, the benchmark and ``cardiomics review`` each build an app against their own
CARDIOMICS_HOME; nothing is global.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException  # also the router's own 404/405

from cardiomics.config import Settings
from cardiomics.errors import CardiomicsError

from .accounts import Accounts
from .security import DEFAULT_TRUSTED_PROXIES, PEER, TRUSTED_PROXIES_ENV, LoginRequired, login_url, parse_proxies
from .sessions import COOKIE, MAX_AGE_S, Session, Signer, load_secret
from .throttle import LoginThrottle

log = structlog.get_logger(__name__)
HERE = Path(__file__).parent
USER_HEADER_ENV = "CARDIOMICS_REVIEW_USER_HEADER"
FORWARDED_ALLOW_ENV = "FORWARDED_ALLOW_IPS"  # uvicorn's name, so existing deployments keep their setting
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
# HTTP status for typed errors a page can meet
STATUS = {"PolicyError": 409, "NotFoundError": 404, "InputError": 400, "AuditError": 500}


class DirectPeer:
    """Keeps the address of the machine that opened the connection, then applies X-Forwarded-For.

    uvicorn's own proxy-header step replaces the client address with the forwarded one, after which
    the app could no longer tell whether a user header came from the proxy; so the app is served with
    uvicorn's step off (``proxy_headers=False``) and does the same here, once it has kept the peer.
    Left on, the forwarded address is taken for the peer and the user header is refused: it fails closed.
    """

    def __init__(self, app, forwarded_allow_ips: str) -> None:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        self.app = ProxyHeadersMiddleware(app, trusted_hosts=forwarded_allow_ips)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            scope[PEER] = client[0] if client else None
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, *, runs=None, user_header: str | None = None,
               trusted_proxies: str | None = None) -> FastAPI:
    """Build the app. ``user_header`` (or $CARDIOMICS_REVIEW_USER_HEADER) trusts a reverse proxy's user header
    when the request comes from an address in ``trusted_proxies`` (or $CARDIOMICS_REVIEW_TRUSTED_PROXIES,
    default loopback)."""
    from cardiomics.agents.runs import Runs

    settings = (settings or Settings.from_env()).ensure()
    app = FastAPI(title="cardiomics review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.runs = runs or Runs(settings)
    app.state.accounts = Accounts(settings.home)
    app.state.login_throttle = LoginThrottle()  # failed-login counters of this process (see throttle.py)
    app.state.signer = Signer(load_secret(settings.home))
    app.state.user_header = (user_header if user_header is not None else os.environ.get(USER_HEADER_ENV, "")).strip() or None
    app.state.trusted_proxies = parse_proxies(trusted_proxies if trusted_proxies is not None
                                              else os.environ.get(TRUSTED_PROXIES_ENV, DEFAULT_TRUSTED_PROXIES))
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    app.state.templates.env.filters["when"] = _when
    app.state.qc_ids = {}  # run_id -> (study_id, segmentation_id)
    app.state.reports = OrderedDict()  # (run_id, version) -> Report, LRU: versions are immutable on disk
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def sessions_and_headers(request: Request, call_next):
        signer: Signer = app.state.signer
        existing = signer.load(request.cookies.get(COOKIE))
        request.state.session = existing or Session.new()
        response = await call_next(request)
        current: Session = request.state.session
        if current != existing:
            response.set_cookie(COOKIE, signer.dump(current), max_age=MAX_AGE_S, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/")
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired):
        return RedirectResponse(login_url(exc.next_path), status_code=303)

    @app.exception_handler(CardiomicsError)
    async def _typed(request: Request, exc: CardiomicsError):
        code = STATUS.get(exc.kind, 400)
        if _wants_json(request):
            return JSONResponse(exc.to_dict(), status_code=code)
        return app.state.templates.TemplateResponse(request, "error.html", {"error": exc.to_dict(), "user": None},
                                                    status_code=code)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        body = {"error": "HTTPError", "code": str(exc.status_code), "message": str(exc.detail), "hint": ""}
        if _wants_json(request):
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
        return app.state.templates.TemplateResponse(request, "error.html", {"error": body, "user": None},
                                                    status_code=exc.status_code, headers=exc.headers)

    from .routes import router

    app.include_router(router)
    # added last, so it runs first: every route and middleware above sees the peer already kept
    app.add_middleware(DirectPeer, forwarded_allow_ips=os.environ.get(FORWARDED_ALLOW_ENV, DEFAULT_TRUSTED_PROXIES))
    log.info("review app ready", home=str(settings.home), trusted_header=bool(app.state.user_header),
             trusted_proxies=[str(n) for n in app.state.trusted_proxies] if app.state.user_header else None)
    return app


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or "/provenance/" in request.url.path


def _when(iso: str) -> str:
    """'2026-01-02T03:04:05+00:00' -> '2026-01-02 03:04 UTC' (short enough for a side bar)."""
    if isinstance(iso, str) and len(iso) >= 16 and iso[10] == "T":
        return f"{iso[:10]} {iso[11:16]}" + (" UTC" if iso.endswith(("+00:00", "Z")) else "")
    return str(iso)
