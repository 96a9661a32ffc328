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
from .security import LoginRequired, login_url
from .sessions import COOKIE, MAX_AGE_S, Session, Signer, load_secret
from .throttle import LoginThrottle

log = structlog.get_logger(__name__)
HERE = Path(__file__).parent
USER_HEADER_ENV = "CARDIOMICS_REVIEW_USER_HEADER"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
# HTTP status for typed errors a page can meet
STATUS = {"PolicyError": 409, "NotFoundError": 404, "InputError": 400, "AuditError": 500}


def create_app(settings: Settings | None = None, *, runs=None, user_header: str | None = None) -> FastAPI:
    """Build the app. ``user_header`` (or $CARDIOMICS_REVIEW_USER_HEADER) trusts a reverse proxy's user header."""
    from cardiomics.agents.runs import Runs

    settings = (settings or Settings.from_env()).ensure()
    app = FastAPI(title="cardiomics review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.runs = runs or Runs(settings)
    app.state.accounts = Accounts(settings.home)
    app.state.login_throttle = LoginThrottle()  # failed-login counters of this process (see throttle.py)
    app.state.signer = Signer(load_secret(settings.home))
    app.state.user_header = (user_header if user_header is not None else os.environ.get(USER_HEADER_ENV, "")).strip() or None
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
    log.info("review app ready", home=str(settings.home), trusted_header=bool(app.state.user_header))
    return app


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or "/provenance/" in request.url.path


def _when(iso: str) -> str:
    """'2026-01-02T03:04:05+00:00' -> '2026-01-02 03:04 UTC' (short enough for a side bar)."""
    if isinstance(iso, str) and len(iso) >= 16 and iso[10] == "T":
        return f"{iso[:10]} {iso[11:16]}" + (" UTC" if iso.endswith(("+00:00", "Z")) else "")
    return str(iso)
