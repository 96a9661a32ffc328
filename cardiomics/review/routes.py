"""Pages, decisions and exports. Handlers are sync: ``Runs`` blocks, and FastAPI runs them in threads."""

from __future__ import annotations

import base64
import re
from collections import OrderedDict
from typing import Any

import structlog
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from cardiomics.agents.compose import LABELS
from cardiomics.errors import InputError, NotFoundError
from cardiomics.tools.report import Report

from . import overlay, rundata
from .diff import diff as report_diff
from .pdf import render_pdf
from .security import api_user, page_user, require_csrf, safe_next, session
from .sessions import Session
from .throttle import Lockout

log = structlog.get_logger(__name__)
router = APIRouter()
RUN_ID = r"^run-[A-Za-z0-9_.-]{1,80}$"
WAITING_LABEL = {"qc-approval": "QC approval of the segmentation", "sign-off": "sign-off of the draft report"}
IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}
REPORT_CACHE = 32  # report versions kept parsed in memory (each holds its figures)
EXPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"


def _runs(request: Request):
    return request.app.state.runs


def _render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("user", getattr(request.state, "user", None))
    ctx["csrf"] = session(request).csrf
    ctx["trusted_header"] = bool(request.app.state.user_header)
    return request.app.state.templates.TemplateResponse(request, name, ctx, status_code=status_code)


def _check_run_id(run_id: str) -> str:
    if not re.match(RUN_ID, run_id):
        raise NotFoundError("unknown-run", f"no run {run_id}")
    return run_id


def _report(request: Request, run_id: str, version: int | None = None) -> Report:
    """A report version; cached because stored versions never change."""
    store = _runs(request).services.reports
    if version is None:
        versions = store.versions(run_id)
        if not versions:
            return store.load(run_id)  # raises the typed no-report error
        version = versions[-1]
    cache: OrderedDict = request.app.state.reports
    key = (run_id, version)
    if key in cache:
        cache.move_to_end(key)
    else:
        cache[key] = store.load(run_id, version)
        while len(cache) > REPORT_CACHE:
            cache.popitem(last=False)
    return cache[key]


def _user(request: Request) -> str:
    request.state.user = page_user(request)
    return request.state.user


# --- login ---------------------------------------------------------------------------------------

@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/"):
    return _render(request, "login.html", next=safe_next(next), error=None, user=None)


@router.post("/login")
def login(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("/"),
          csrf_token: str = Form("")):
    require_csrf(request, csrf_token)
    address = request.client.host if request.client else "unknown"
    throttle = request.app.state.login_throttle  # set by create_app
    attempt = throttle.admit(username, address)
    if isinstance(attempt, Lockout):  # refused before the password is looked at: no scrypt work, no confirmation
        log.info("review login throttled", user=username[:64], client=address, counter=attempt.counter,
                 retry_after_s=attempt.retry_after_s)
        return _locked_out(request, next, attempt)
    # read before the password check: a password replaced in between leaves this session stale, never the reverse
    epoch = request.app.state.accounts.epoch(username)
    if not request.app.state.accounts.check(username, password):
        log.warning("review login refused", user=username[:64], client=address)
        lockout = throttle.failed(attempt)
        if lockout is not None:
            log.warning("review logins locked after repeated failures", user=username[:64], client=address,
                        counter=lockout.counter, max_failures=throttle.limits[lockout.counter], window_s=throttle.window_s,
                        retry_after_s=lockout.retry_after_s)
        return _render(request, "login.html", status_code=401, next=safe_next(next), error="Unknown reviewer or wrong password.", user=None)
    throttle.succeeded(attempt)
    request.state.session = Session.new(user=username, epoch=epoch)  # new CSRF token on login
    log.info("review login", user=username)
    return RedirectResponse(safe_next(next), status_code=303)


def _locked_out(request: Request, next: str, lockout: Lockout) -> HTMLResponse:
    response = _render(request, "login.html", status_code=429, next=safe_next(next), error=lockout.message() + ".", user=None)
    response.headers["Retry-After"] = str(lockout.retry_after_s)
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("")):
    require_csrf(request, csrf_token)
    request.state.session = Session.new()
    return RedirectResponse("/login", status_code=303)


# --- pages ---------------------------------------------------------------------------------------

@router.get("/", response_class=HTMLResponse)
def runs_list(request: Request, user: str = Depends(_user)):
    runs = _runs(request)
    rows = []
    for st in runs.list():
        rows.append({"st": st, "waiting": WAITING_LABEL.get(st.waiting_for or "", "—"),
                     "versions": runs.services.reports.versions(st.run_id)})
    return _render(request, "runs.html", rows=rows)


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str, user: str = Depends(_user)):
    _check_run_id(run_id)
    runs = _runs(request)
    st = runs.status(run_id)
    if st.waiting_for == "qc-approval":
        return RedirectResponse(f"/runs/{run_id}/qc", status_code=303)
    if runs.services.reports.versions(run_id):
        return RedirectResponse(f"/runs/{run_id}/report", status_code=303)
    return _render(request, "run.html", st=st, has_seg=_has_segmentation(runs, run_id))


def _has_segmentation(runs, run_id: str) -> bool:
    res = rundata.results(runs, run_id)
    return "segment" in res and "load_study" in res


@router.get("/runs/{run_id}/qc", response_class=HTMLResponse)
def qc_page(request: Request, run_id: str, user: str = Depends(_user)):
    _check_run_id(run_id)
    runs = _runs(request)
    st = runs.status(run_id)
    ctx = rundata.qc_context(runs, run_id)
    frames, slices = overlay.shape(runs.services.store, ctx["study_id"], ctx["segmentation_id"])
    res = ctx["results"]
    func = res.get("cardiac_function") or {}
    measures = [(LABELS.get(k, k), v) for k, v in func.items() if isinstance(v, dict) and "value" in v and "unit" in v]
    checks = [(stage, q) for stage in ("load_study", "segment", "cardiac_function") for q in (res.get(stage) or {}).get("qc", [])]
    verdicts = {stage: (res.get(stage) or {}).get("qc_verdict", "—") for stage in ("load_study", "segment", "cardiac_function")}
    phases = [(name, f) for name, f in (("ED", ctx["ed_frame"]), ("ES", ctx["es_frame"])) if f is not None] or [("frame 0", 0)]
    return _render(request, "qc.html", st=st, slices=list(range(slices)), frames=frames, phases=phases, measures=measures,
                   func_result=(func.get("provenance") or {}).get("result_id"), checks=checks, verdicts=verdicts,
                   seg_result=(res.get("segment") or {}).get("provenance", {}).get("result_id"))


@router.get("/runs/{run_id}/qc/slice.png")
def qc_slice(request: Request, run_id: str, frame: int = Query(..., ge=0), slice: int = Query(..., ge=0),
             user: str = Depends(api_user)):
    _check_run_id(run_id)
    runs = _runs(request)
    study_id, seg_id = rundata.qc_ids(runs, run_id, request.app.state.qc_ids)
    try:
        png = overlay.slice_png(runs.services.store, study_id, seg_id, frame, slice)
    except IndexError as exc:
        raise HTTPException(404, str(exc)) from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/runs/{run_id}/report", response_class=HTMLResponse)
def report_page(request: Request, run_id: str, version: int | None = None, user: str = Depends(_user)):
    _check_run_id(run_id)
    runs = _runs(request)
    st = runs.status(run_id)
    rep = _report(request, run_id, version)
    versions = [_report(request, run_id, v) for v in runs.services.reports.versions(run_id)]
    sections: dict[str, list] = {}
    for f in rep.findings:
        sections.setdefault(f.section, []).append(f)
    decidable = rundata.current_draft(runs, st) == rep.version
    signed_line = None
    if rep.signature:
        signed_line = next((r for r in rundata.audit_records(runs, run_id)
                            if r.get("event") == "report_signed" and r.get("version") == rep.version), None)
    return _render(request, "report.html", st=st, r=rep, sections=list(sections.items()), versions=versions,
                   decidable=decidable, signed_line=signed_line,
                   references=sorted({f.reference.source for f in rep.findings if f.reference}))


@router.get("/runs/{run_id}/v{version}/figures/{figure_id}.png")
def figure(request: Request, run_id: str, version: int, figure_id: str, user: str = Depends(api_user)):
    _check_run_id(run_id)
    rep = _report(request, run_id, version)
    for fig in rep.figures:
        if fig.id == figure_id:
            return Response(base64.b64decode(fig.png_base64), media_type="image/png", headers=IMMUTABLE)
    raise NotFoundError("no-figure", f"report {run_id} v{version} has no figure {figure_id}")


@router.get("/runs/{run_id}/provenance/{result_id}")
def provenance(request: Request, run_id: str, result_id: str, version: int | None = None, user: str = Depends(api_user)):
    _check_run_id(run_id)
    return JSONResponse(rundata.provenance(_runs(request), run_id, result_id, version))


@router.get("/runs/{run_id}/diff", response_class=HTMLResponse)
def diff_page(request: Request, run_id: str, a: int, b: int, user: str = Depends(_user)):
    _check_run_id(run_id)
    ra, rb = _report(request, run_id, a), _report(request, run_id, b)
    return _render(request, "diff.html", st=_runs(request).status(run_id), d=report_diff(ra, rb), ra=ra, rb=rb)


# --- exports -------------------------------------------------------------------------------------

@router.get("/runs/{run_id}/export/v{version}.{fmt}")
def export(request: Request, run_id: str, version: int, fmt: str, user: str = Depends(api_user)):
    _check_run_id(run_id)
    store = _runs(request).services.reports
    rep = _report(request, run_id, version)
    name = f"{run_id}-v{version}"
    if fmt == "json":
        return Response(store.path(run_id, version, ".json").read_bytes(), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}.json"'})
    if fmt == "html":
        return Response(store.path(run_id, version, ".html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": EXPORT_CSP})
    if fmt == "pdf":
        pdf = render_pdf(rep)
        return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}.pdf"'})
    raise NotFoundError("no-format", f"no export format {fmt!r}", hint="html, json or pdf (signed reports)")


# --- decisions -----------------------------------------------------------------------------------

@router.post("/runs/{run_id}/decide")
def decide(request: Request, run_id: str, decision: str = Form(""), comment: str = Form(""), expect: str = Form(""),
           version: int | None = Form(None), csrf_token: str = Form("")):
    """Record a decision as the logged-in reviewer; refused if the page the reviewer saw is stale."""
    reviewer = api_user(request)  # 401 before anything else
    require_csrf(request, csrf_token)  # 403 for a forged post
    _check_run_id(run_id)
    if expect not in ("qc-approval", "sign-off"):
        raise InputError("bad-checkpoint", "the form does not name the checkpoint it was shown for", hint="reload the page")
    if decision not in ("approved", "rejected", "changes-requested"):
        raise InputError("bad-decision", f"unknown decision {decision!r}")
    comment = comment.strip()
    if expect == "sign-off" and version is None:  # without it a stale page could sign a draft the reviewer never saw
        raise InputError("version-required", "the sign-off form does not name the draft version it shows",
                         hint="reload the report and decide again")
    if decision == "changes-requested" and not comment:
        raise InputError("comment-required", "say what should change: a comment is required to request changes")
    runs = _runs(request)
    try:  # Runs.decide checks checkpoint and draft version under the run's lock: a stale page is refused
        st = runs.decide(run_id, reviewer, decision, comment, expect=expect,
                         expect_version=version if expect == "sign-off" else None)
    except ValidationError as exc:
        raise InputError("bad-decision", exc.errors()[0]["msg"]) from exc
    log.info("review decision", run_id=run_id, reviewer=reviewer, decision=decision, checkpoint=expect, status=st.status)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(st.model_dump(mode="json"))
    return RedirectResponse(f"/runs/{run_id}", status_code=303)
