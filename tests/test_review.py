"""The review web app: accounts, sessions and CSRF, pages, provenance, decisions, versions, exports.

One phantom run is processed once per session (real segmenter) and its home copied for each test,
so every test starts from a run waiting for QC approval.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import threading

import pytest

from cardiomics.audit import verify_dir

from conftest import access_lines

PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def processed(tmp_path_factory, phantom_study):
    """A home + audit dir holding one run that finished processing and waits for QC approval."""
    from cardiomics.agents.runs import Runs
    from cardiomics.config import Settings

    root = tmp_path_factory.mktemp("review-template")
    settings = Settings(home=root / "home", audit_dir=root / "audit")
    with Runs(settings) as runs:
        st = runs.start(str(phantom_study[0]), height_cm=170, weight_kg=70)
    assert st.waiting_for == "qc-approval", st
    return root, st.run_id


@pytest.fixture
def env(processed, tmp_path, monkeypatch):
    """A private copy of the processed run, an app on it and two reviewer accounts."""
    from cardiomics.config import Settings
    from cardiomics.review import create_app
    from cardiomics.review.accounts import Accounts

    root, run_id = processed
    shutil.copytree(root, tmp_path / "copy")
    settings = Settings(home=tmp_path / "copy" / "home", audit_dir=tmp_path / "copy" / "audit")
    monkeypatch.delenv("CARDIOMICS_REVIEW_USER_HEADER", raising=False)
    accounts = Accounts(settings.home)
    accounts.add("dr-ada", PASSWORD)
    accounts.add("dr-bo", PASSWORD + "!")
    app = create_app(settings)
    yield app, settings, run_id
    app.state.runs.close()


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _client(app):
    from fastapi.testclient import TestClient

    return TestClient(app, follow_redirects=False)


def _login(client, name: str, password: str) -> str:
    token = _csrf(client.get("/login").text)
    res = client.post("/login", data={"username": name, "password": password, "csrf_token": token, "next": "/"})
    assert res.status_code == 303, res.text
    return _csrf(client.get("/").text)  # the session's token after login


def _events(settings, run_id: str) -> list[dict]:
    path = settings.audit_dir / f"{run_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _approvals(settings, run_id: str, checkpoint: str) -> list[dict]:
    return [r for r in _events(settings, run_id) if r["event"] == "approval" and r["checkpoint"] == checkpoint]


# --- accounts and sessions ------------------------------------------------------------------------

def test_accounts_store_salted_scrypt_only(tmp_path):
    from cardiomics.errors import InputError
    from cardiomics.review.accounts import Accounts

    acc = Accounts(tmp_path)
    acc.add("dr-one", PASSWORD)
    acc.add("dr-two", PASSWORD)
    data = json.loads(acc.path.read_text())["users"]
    assert PASSWORD not in acc.path.read_text()
    assert data["dr-one"]["salt"] != data["dr-two"]["salt"] and data["dr-one"]["hash"] != data["dr-two"]["hash"]
    assert stat.S_IMODE(os.stat(acc.path).st_mode) == 0o600
    assert acc.check("dr-one", PASSWORD) and not acc.check("dr-one", PASSWORD + "x") and not acc.check("nobody", PASSWORD)
    with pytest.raises(InputError):
        acc.add("dr-one", "another password")  # exists
    with pytest.raises(InputError):
        acc.add("dr-three", "short")
    with pytest.raises(InputError):
        acc.add("../evil", PASSWORD)


def test_session_cookie_is_signed(tmp_path):
    from cardiomics.review.sessions import Session, Signer, load_secret

    signer = Signer(load_secret(tmp_path))
    cookie = signer.dump(Session.new(user="dr-ada"))
    assert signer.load(cookie).user == "dr-ada"
    _, mac = cookie.rsplit(".", 1)
    forged = json.dumps({"c": "x", "u": "dr-evil", "t": 9e9}).encode()
    import base64

    assert signer.load(base64.urlsafe_b64encode(forged).decode().rstrip("=") + "." + mac) is None
    assert Signer(b"another secret").load(cookie) is None
    assert stat.S_IMODE(os.stat(tmp_path / "review_secret.key").st_mode) == 0o600


def test_session_key_is_created_whole_and_a_damaged_one_is_refused(tmp_path, settings):
    from cardiomics.errors import InputError
    from cardiomics.review import create_app
    from cardiomics.review.sessions import SECRET_BYTES, load_secret
    from cardiomics.tools.store import write_secret

    keys = tmp_path / "keys"  # a folder created on first use
    secret = load_secret(keys)
    path = keys / "review_secret.key"
    assert len(secret) == SECRET_BYTES == 32 and path.read_bytes() == secret
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(keys) == ["review_secret.key"]  # no temporary file left beside it
    write_secret(path)  # a second first start loses the race: the key in place is kept
    assert load_secret(keys) == secret and os.listdir(keys) == ["review_secret.key"]

    for damaged in (b"", b"\x01" * 16, b"\x01" * 33):  # a crash mid-write, a truncated or a foreign file
        path.write_bytes(damaged)
        with pytest.raises(InputError) as exc:
            load_secret(keys)
        assert exc.value.code == "bad-session-key" and f"delete {path}" in exc.value.hint and "logged out" in exc.value.hint

    (settings.home / "review_secret.key").write_bytes(b"")
    with pytest.raises(InputError) as exc:  # the app refuses to start with it
        create_app(settings, runs=object())
    assert exc.value.code == "bad-session-key"


# --- refusals -------------------------------------------------------------------------------------

def test_anonymous_and_forged_decisions_are_refused(env):
    app, settings, run_id = env
    before = (settings.audit_dir / f"{run_id}.jsonl").read_bytes()

    anon = _client(app)
    assert anon.get("/").status_code == 303 and anon.get("/").headers["location"].startswith("/login")
    assert anon.get(f"/runs/{run_id}/provenance/res-0000000000000000").status_code == 401
    token = _csrf(anon.get("/login").text)  # even with a valid anonymous CSRF token
    res = anon.post(f"/runs/{run_id}/decide", data={"decision": "approved", "expect": "qc-approval", "csrf_token": token})
    assert res.status_code == 401

    bad = _client(app)
    assert bad.post("/login", data={"username": "dr-ada", "password": "wrong password", "csrf_token": _csrf(bad.get("/login").text)}).status_code == 401

    ada = _client(app)
    _login(ada, "dr-ada", PASSWORD)
    forged = ada.post(f"/runs/{run_id}/decide", data={"decision": "approved", "expect": "qc-approval"})
    assert forged.status_code == 403
    other = _client(app)
    other_token = _login(other, "dr-bo", PASSWORD + "!")
    wrong = ada.post(f"/runs/{run_id}/decide", data={"decision": "approved", "expect": "qc-approval", "csrf_token": other_token})
    assert wrong.status_code == 403
    login_forged = _client(app).post("/login", data={"username": "dr-ada", "password": PASSWORD})
    assert login_forged.status_code == 403

    assert (settings.audit_dir / f"{run_id}.jsonl").read_bytes() == before  # nothing written
    assert app.state.runs.status(run_id).waiting_for == "qc-approval"


def test_new_password_or_removed_account_ends_existing_sessions(env):
    from cardiomics.review.accounts import Accounts

    app, settings, run_id = env
    ada, bo, fresh = _client(app), _client(app), _client(app)
    _login(ada, "dr-ada", PASSWORD)
    bo_token = _login(bo, "dr-bo", PASSWORD + "!")
    assert ada.get("/").status_code == 200 and bo.get("/").status_code == 200

    accounts = Accounts(settings.home)
    accounts.add("dr-ada", "a new passphrase", replace=True)
    res = ada.get("/")
    assert res.status_code == 303 and res.headers["location"].startswith("/login")
    assert ada.get("/").status_code == 303  # the stale user is forgotten, not only refused once
    assert bo.get("/").status_code == 200  # other reviewers' sessions go on
    assert _try_login(fresh, "dr-ada", PASSWORD).status_code == 401  # the old password is gone too
    _login(fresh, "dr-ada", "a new passphrase")
    assert fresh.get("/").status_code == 200

    accounts.remove("dr-bo")
    res = bo.post(f"/runs/{run_id}/decide", data={"decision": "approved", "expect": "qc-approval", "csrf_token": bo_token})
    assert res.status_code == 401
    assert bo.get("/").status_code == 303
    assert _approvals(settings, run_id, "qc") == [] and app.state.runs.status(run_id).waiting_for == "qc-approval"


def test_cookie_without_the_account_epoch_is_not_a_login(env):
    from cardiomics.review.sessions import COOKIE, Session

    app, _, _ = env
    signer = app.state.signer
    old = _client(app)
    old.cookies.set(COOKIE, signer.dump(Session.new(user="dr-ada")))  # validly signed, from before epochs existed
    assert old.get("/").status_code == 303
    current = _client(app)
    current.cookies.set(COOKIE, signer.dump(Session.new(user="dr-ada", epoch=app.state.accounts.epoch("dr-ada"))))
    assert current.get("/").status_code == 200


class _Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def login_app(settings, monkeypatch):
    """An app for the login page only (no run is processed), a hand-moved throttle clock, and a count of password checks."""
    from cardiomics.review import create_app
    from cardiomics.review.accounts import Accounts
    from cardiomics.review.throttle import LoginThrottle

    monkeypatch.delenv("CARDIOMICS_REVIEW_USER_HEADER", raising=False)
    accounts = Accounts(settings.home)
    accounts.add("dr-ada", PASSWORD)
    accounts.add("dr-bo", PASSWORD + "!")
    app = create_app(settings, runs=object())  # the login routes never touch runs
    clock = _Clock()
    app.state.login_throttle = LoginThrottle(clock=clock)
    checked: list[str] = []
    check = app.state.accounts.check
    monkeypatch.setattr(app.state.accounts, "check", lambda name, pw: checked.append(name) or check(name, pw))
    return app, clock, checked


def _from(app, address: str):
    from fastapi.testclient import TestClient

    return TestClient(app, follow_redirects=False, client=(address, 40000))


def _try_login(client, name: str, password: str):
    token = _csrf(client.get("/login").text)
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token, "next": "/"})


def test_failed_logins_lock_the_name_from_that_address_only(login_app):
    from structlog.testing import capture_logs

    app, clock, checked = login_app
    attacker = _from(app, "10.0.0.1")
    with capture_logs() as logs:
        for _ in range(5):
            assert _try_login(attacker, "dr-ada", "wrong password").status_code == 401
        locked = _try_login(attacker, "dr-ada", PASSWORD)  # the right password, too late
    assert locked.status_code == 429 and locked.headers["retry-after"] == "900"
    assert "too many failed logins; try again in 15 minutes" in locked.text
    assert checked == ["dr-ada"] * 5  # the locked attempt never reached the password check
    (lock_line,) = [r for r in logs if r["event"] == "review logins locked after repeated failures"]
    assert lock_line["log_level"] == "warning" and lock_line["user"] == "dr-ada" and lock_line["client"] == "10.0.0.1"
    assert lock_line["counter"] == "name from this address" and lock_line["max_failures"] == 5
    assert not any(PASSWORD in str(r) or "wrong password" in str(r) for r in logs)

    # a stranger's failures do not lock the reviewer out elsewhere, nor a colleague behind the same address
    assert _try_login(_from(app, "10.0.0.9"), "dr-ada", PASSWORD).status_code == 303
    assert _try_login(attacker, "dr-bo", PASSWORD + "!").status_code == 303
    assert len(checked) == 7

    clock.t += 600
    later = _try_login(attacker, "dr-ada", PASSWORD)
    assert later.status_code == 429 and later.headers["retry-after"] == "300" and "try again in 5 minutes" in later.text
    clock.t += 300  # the window has passed
    assert _try_login(attacker, "dr-ada", PASSWORD).status_code == 303


def test_one_address_guessing_many_names_is_locked(login_app):
    app, clock, checked = login_app
    caller = _from(app, "10.0.0.5")
    for i in range(20):  # 20 names, each under the per-name limit
        assert _try_login(caller, f"dr-guess-{i}", "wrong password").status_code == 401
    refused = _try_login(caller, "dr-bo", PASSWORD + "!")  # any name, even a right password
    assert refused.status_code == 429 and len(checked) == 20
    assert _try_login(_from(app, "10.0.0.6"), "dr-bo", PASSWORD + "!").status_code == 303  # other addresses are not
    clock.t += 900
    assert _try_login(caller, "dr-bo", PASSWORD + "!").status_code == 303


def test_many_addresses_guessing_one_name_spare_the_reviewers_known_address(login_app):
    app, clock, checked = login_app
    home = _from(app, "10.0.1.1")
    assert _try_login(home, "dr-ada", PASSWORD).status_code == 303  # the reviewer's usual address
    for i in range(20):  # a distributed guess: one try from each of 20 addresses
        assert _try_login(_from(app, f"192.0.2.{i + 1}"), "dr-ada", "wrong password").status_code == 401
    fresh = _try_login(_from(app, "198.51.100.7"), "dr-ada", PASSWORD)
    assert fresh.status_code == 429 and "too many failed logins" in fresh.text  # new addresses are refused
    assert _try_login(home, "dr-ada", PASSWORD).status_code == 303  # the known one is not
    assert _try_login(_from(app, "198.51.100.8"), "dr-bo", PASSWORD + "!").status_code == 303  # nor other names
    # the reviewer's login does not reset the count for new addresses
    assert _try_login(_from(app, "198.51.100.9"), "dr-ada", PASSWORD).status_code == 429
    clock.t += 900
    assert _try_login(_from(app, "198.51.100.9"), "dr-ada", PASSWORD).status_code == 303
    assert len(checked) == 1 + 20 + 1 + 1 + 1


def test_successful_login_resets_the_name_counter_of_its_address(login_app):
    app, _, _ = login_app
    client = _from(app, "10.0.0.1")
    for _ in range(4):
        assert _try_login(client, "dr-ada", "wrong password").status_code == 401
    assert _try_login(client, "dr-ada", PASSWORD).status_code == 303
    for _ in range(4):  # eight failures for dr-ada here in the window, but a success came between
        assert _try_login(client, "dr-ada", "wrong password").status_code == 401
    assert _try_login(client, "dr-ada", PASSWORD).status_code == 303


def test_login_throttle_limits_are_parameters():
    from cardiomics.review.throttle import ADDRESS, NAME, PAIR, Attempt, Lockout, LoginThrottle

    clock = _Clock()
    throttle = LoginThrottle(max_failures=2, window_s=60, max_address_failures=3, max_name_failures=4,
                             remember_s=100, clock=clock)
    first = throttle.admit("dr-x", "10.0.0.1")
    assert isinstance(first, Attempt) and throttle.failed(first) is None
    clock.t += 10
    second = throttle.admit("dr-x", "10.0.0.1")
    assert isinstance(second, Attempt) and throttle.failed(second) == Lockout(50, PAIR)  # the first failure ages out first
    assert isinstance(throttle.admit("dr-y", "10.0.0.1"), Attempt)  # third failure from the address
    assert throttle.admit("dr-z", "10.0.0.1") == Lockout(50, ADDRESS)
    for i in (7, 8):
        assert isinstance(throttle.admit("dr-x", f"10.0.0.{i}"), Attempt)
    assert throttle.admit("dr-x", "10.0.0.9") == Lockout(50, NAME)  # four failures for dr-x from new addresses
    clock.t += 50  # t = 1060
    ok = throttle.admit("dr-x", "10.0.0.9")
    assert isinstance(ok, Attempt)
    throttle.succeeded(ok)  # 10.0.0.9 is now a known address of dr-x
    clock.t += 45  # t = 1105: the earlier failures have aged out
    for i in range(4):
        assert isinstance(throttle.admit("dr-x", f"10.0.1.{i}"), Attempt)
    assert throttle.admit("dr-x", "10.0.1.9") == Lockout(60, NAME)
    assert isinstance(throttle.admit("dr-x", "10.0.0.9"), Attempt)  # remembered, so exempt from the name counter
    clock.t += 56  # t = 1161: remembered for remember_s (100 s) only
    assert throttle.admit("dr-x", "10.0.0.9") == Lockout(4, NAME)
    with pytest.raises(ValueError):
        LoginThrottle(max_failures=0)
    with pytest.raises(ValueError):
        LoginThrottle(max_name_failures=0)


def test_trusted_proxy_header_names_the_reviewer(env):
    from cardiomics.review import create_app

    _, settings, run_id = env
    app = create_app(settings, user_header="X-Remote-User")
    try:
        client = _from(app, "127.0.0.1")  # the proxy on the same machine
        token = _csrf(client.get("/login").text)
        data = {"decision": "rejected", "expect": "qc-approval", "comment": "motion", "csrf_token": token}
        assert client.post(f"/runs/{run_id}/decide", data=data).status_code == 401
        assert client.post(f"/runs/{run_id}/decide", data={**data, "csrf_token": ""}, headers={"X-Remote-User": "dr-proxy"}).status_code == 403
        res = client.post(f"/runs/{run_id}/decide", data=data, headers={"X-Remote-User": "dr-proxy"})
        assert res.status_code == 303
        (line,) = _approvals(settings, run_id, "qc")
        assert line["actor"] == "dr-proxy" and line["decision"] == "rejected"
        assert app.state.runs.status(run_id).status == "rejected"
    finally:
        app.state.runs.close()


def test_user_header_only_from_a_trusted_proxy_and_only_a_reviewer_name(env, monkeypatch):
    from cardiomics.errors import InputError
    from cardiomics.review import create_app
    from cardiomics.review.security import TRUSTED_PROXIES_ENV

    _, settings, run_id = env
    monkeypatch.delenv(TRUSTED_PROXIES_ENV, raising=False)
    app = create_app(settings, user_header="X-Remote-User")
    try:
        def decide(client, user: str):
            token = _csrf(client.get("/login").text)
            return client.post(f"/runs/{run_id}/decide", headers={"X-Remote-User": user, "accept": "application/json"},
                               data={"decision": "approved", "expect": "qc-approval", "csrf_token": token})

        direct = decide(_from(app, "10.0.0.7"), "dr-ada")  # a client that reaches the app past the proxy
        assert direct.status_code == 403 and "trusted proxy" in direct.json()["message"]
        assert TRUSTED_PROXIES_ENV in direct.json()["message"]
        proxy = _from(app, "::1")
        for bad in ("dr ada", "../dr-ada", "dr-ada,dr-bo", "-dr", "x" * 65):
            res = decide(proxy, bad)
            assert res.status_code == 403 and "not hold a reviewer name" in res.json()["message"], bad
        assert _approvals(settings, run_id, "qc") == []

        # the proxy forwards the client's address: the header is still judged by the proxy's own
        forwarded = _from(app, "127.0.0.1")
        forwarded.headers["X-Forwarded-For"] = "203.0.113.9"
        assert decide(forwarded, "dr-ada").status_code == 200
        (line,) = _approvals(settings, run_id, "qc")
        assert line["actor"] == "dr-ada"
    finally:
        app.state.runs.close()

    monkeypatch.setenv(TRUSTED_PROXIES_ENV, "10.0.0.0/24, 192.0.2.8")
    app = create_app(settings, user_header="X-Remote-User")
    try:
        assert _from(app, "10.0.0.7").get("/", headers={"X-Remote-User": "dr-ada"}).status_code == 200
        assert _from(app, "127.0.0.1").get("/", headers={"X-Remote-User": "dr-ada"}).status_code == 403  # not listed now
    finally:
        app.state.runs.close()
    monkeypatch.setenv(TRUSTED_PROXIES_ENV, "proxy.example")
    with pytest.raises(InputError) as exc:
        create_app(settings, user_header="X-Remote-User", runs=object())
    assert exc.value.code == "bad-trusted-proxy"


def test_forwarded_client_address_still_feeds_the_login_throttle(login_app):
    from structlog.testing import capture_logs

    app, _, _ = login_app
    client = _from(app, "127.0.0.1")
    client.headers["X-Forwarded-For"] = "203.0.113.9"
    with capture_logs() as logs:
        assert _try_login(client, "dr-ada", "wrong password").status_code == 401
    (line,) = [r for r in logs if r["event"] == "review login refused"]
    assert line["client"] == "203.0.113.9"


# --- pages, provenance, versions ------------------------------------------------------------------

def test_qc_page_overlays_and_approval(env):
    import io

    import numpy as np
    from PIL import Image

    app, settings, run_id = env
    client = _client(app)
    token = _login(client, "dr-ada", PASSWORD)
    listing = client.get("/").text
    assert run_id in listing and "awaiting-qc" in listing and "QC approval of the segmentation" in listing

    page = client.get(f"/runs/{run_id}/qc").text
    res = app.state.runs.graph.get_state(app.state.runs._config(run_id)).values["results"]
    n_slices, ed = res["segment"]["n_slices"], res["cardiac_function"]["ed_frame"]
    assert len(re.findall(r'qc/slice\.png\?frame=\d+&amp;slice=\d+', page)) == 2 * n_slices
    png = client.get(f"/runs/{run_id}/qc/slice.png", params={"frame": ed, "slice": n_slices // 2})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    rgb = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
    assert rgb.shape[:2] == (2 * 160, 2 * 160)
    for colour in ((31, 119, 180), (44, 160, 44), (214, 39, 40)):  # RV, myocardium, LV contours drawn
        assert (rgb == colour).all(axis=2).sum() > 20, colour
    assert client.get(f"/runs/{run_id}/qc/slice.png", params={"frame": 999, "slice": 0}).status_code == 404

    res = client.post(f"/runs/{run_id}/decide", data={"decision": "changes-requested", "comment": "x", "expect": "qc-approval",
                                                    "csrf_token": token})
    assert res.status_code == 409 and "no-changes-at-qc" in res.text
    res = client.post(f"/runs/{run_id}/decide", data={"decision": "approved", "expect": "qc-approval", "csrf_token": token})
    assert res.status_code == 303
    (line,) = _approvals(settings, run_id, "qc")
    assert line["actor"] == "dr-ada" and line["decision"] == "approved"
    assert client.get(f"/runs/{run_id}").headers["location"] == f"/runs/{run_id}/report"


def _to_signoff(app, run_id: str) -> None:
    app.state.runs.decide(run_id, "dr-qc", "approved", expect="qc-approval")


def test_report_page_figures_and_provenance(env):
    app, _, run_id = env
    _to_signoff(app, run_id)
    client = _client(app)
    _login(client, "dr-ada", PASSWORD)
    report = app.state.runs.services.reports.load(run_id)
    page = client.get(f"/runs/{run_id}/report").text
    for f in report.findings:
        assert f'id="num-{f.key}"' in page and f"{f.value:.1f} {f.unit}" in page
    referenced = next(x for x in report.findings if x.reference)
    assert referenced.reference.source.split(",")[0] in page  # reference source shown
    assert {"overlay", "volume-curve"} <= {fig.id for fig in report.figures}
    for fig in report.figures:
        url = f"/runs/{run_id}/v{report.version}/figures/{fig.id}.png"
        assert url in page
        img = client.get(url)
        assert img.status_code == 200 and img.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Limitations" in page and report.limitations[0] in page
    assert 'name="version" value="1"' in page  # the sign-off form names the draft it shows

    ef = next(f for f in report.findings if f.key == "lv_ef_pct")
    body = client.get(f"/runs/{run_id}/provenance/{ef.result_id}").json()
    stored = app.state.runs.graph.get_state(app.state.runs._config(run_id)).values["results"]["cardiac_function"]["provenance"]
    assert body["provenance"]["tool"] == "cardiac_function" == stored["tool"]
    assert body["provenance"]["models"] == stored["models"] and len(stored["models"][0]["weights_sha256"]) == 64
    assert body["provenance"]["input_hashes"] == stored["input_hashes"]
    (call,) = body["audit"]
    assert call["event"] == "tool_call" and call["tool"] == "cardiac_function" and call["result_id"] == ef.result_id
    assert [(a["event"], a.get("checkpoint")) for a in body["approvals"]] == [("approval", "qc"), ("report_version", None)]
    assert body["approvals"][0]["actor"] == "dr-qc"
    assert client.get(f"/runs/{run_id}/provenance/res-0000000000000000").status_code == 404


def test_grounding_flags_are_shown_prominently(env):
    from cardiomics.tools.report import Report

    app, _, run_id = env
    _to_signoff(app, run_id)
    store = app.state.runs.services.reports
    flagged = store.load(run_id).model_copy(update={"version": 9, "grounding_flags": ["number 72.0 is not in any tool output"]})
    store.save(flagged)
    client = _client(app)
    _login(client, "dr-ada", PASSWORD)
    page = client.get(f"/runs/{run_id}/report", params={"version": 9}).text
    alert = page[page.index('id="grounding-flags"'):]
    assert "number 72.0 is not in any tool output" in alert[:600] and 'role="alert"' in page
    assert page.index('id="grounding-flags"') < page.index("<h2>Summary</h2>")  # above the findings, not buried
    assert 'id="decide"' not in page  # v9 is not the version the run waits on
    assert isinstance(store.load(run_id, 9), Report)


def test_changes_requested_new_version_diff_and_stale_page(env):
    app, _, run_id = env
    _to_signoff(app, run_id)
    ada, bo = _client(app), _client(app)
    ada_token, bo_token = _login(ada, "dr-ada", PASSWORD), _login(bo, "dr-bo", PASSWORD + "!")
    form = {"expect": "sign-off", "version": "1"}
    res = ada.post(f"/runs/{run_id}/decide", data={**form, "decision": "changes-requested", "comment": "  ", "csrf_token": ada_token})
    assert res.status_code == 400 and "comment-required" in res.text
    res = ada.post(f"/runs/{run_id}/decide", data={**form, "decision": "changes-requested", "comment": "mention the RV size",
                                                 "csrf_token": ada_token})
    assert res.status_code == 303
    st = app.state.runs.status(run_id)
    assert st.waiting_for == "sign-off" and st.report_version == 2
    # dr-bo still has v1 open: approving it must not sign v2 unseen
    res = bo.post(f"/runs/{run_id}/decide", data={**form, "decision": "approved", "csrf_token": bo_token})
    assert res.status_code == 409 and "moved-on" in res.text
    assert app.state.runs.status(run_id).report_version == 2

    page = ada.get(f"/runs/{run_id}/report").text
    assert f'href="/runs/{run_id}/report?version=1"' in page and f'href="/runs/{run_id}/report?version=2"' in page
    diff = ada.get(f"/runs/{run_id}/diff", params={"a": 1, "b": 2}).text
    ins = re.findall(r"<ins>(.*?)</ins>", diff, re.DOTALL)
    assert any("mention the RV size" in x for x in ins)
    assert 'class="changed"' not in diff  # numbers did not change between drafts
    for fmt, kind in (("json", "application/json"), ("html", "text/html")):
        res = ada.get(f"/runs/{run_id}/export/v2.{fmt}")
        assert res.status_code == 200 and res.headers["content-type"].startswith(kind)
    assert json.loads(ada.get(f"/runs/{run_id}/export/v2.json").content)["version"] == 2
    assert ada.get(f"/runs/{run_id}/export/v2.pdf").status_code == 409  # drafts are not printed as signed


def test_sign_off_must_name_the_draft_version(env):
    app, settings, run_id = env
    _to_signoff(app, run_id)
    ada = _client(app)
    token = _login(ada, "dr-ada", PASSWORD)
    for form in ({}, {"version": ""}):
        res = ada.post(f"/runs/{run_id}/decide", headers={"accept": "application/json"},
                       data={**form, "decision": "approved", "expect": "sign-off", "csrf_token": token})
        assert res.status_code == 400 and res.json()["code"] == "version-required", res.text
    assert _approvals(settings, run_id, "signoff") == []
    st = app.state.runs.status(run_id)
    assert st.waiting_for == "sign-off" and st.report_version == 1
    res = ada.post(f"/runs/{run_id}/decide", data={"decision": "approved", "expect": "sign-off", "version": "1", "csrf_token": token})
    assert res.status_code == 303 and app.state.runs.status(run_id).status == "approved"
    assert [r["actor"] for r in _approvals(settings, run_id, "signoff")] == ["dr-ada"]


# --- concurrency ----------------------------------------------------------------------------------

def test_two_reviewers_at_once_exactly_one_decision_wins(env):
    import httpx

    from cardiomics.review.server import serve_in_thread

    app, settings, run_id = env
    with serve_in_thread(app) as base:
        clients = [httpx.Client(base_url=base, follow_redirects=False, timeout=120) for _ in range(2)]
        tokens = [_login(c, name, pw) for c, (name, pw) in zip(clients, (("dr-ada", PASSWORD), ("dr-bo", PASSWORD + "!")))]
        barrier, results = threading.Barrier(2), [None, None]

        def post(i: int) -> None:
            barrier.wait()
            results[i] = clients[i].post(f"/runs/{run_id}/decide", data={"decision": "approved", "expect": "qc-approval",
                                                                         "csrf_token": tokens[i]})

        threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        for c in clients:
            c.close()
    codes = sorted(r.status_code for r in results)
    assert codes == [303, 409], codes
    loser = next(r for r in results if r.status_code == 409)
    assert "moved-on" in loser.text and "already moved on" in loser.text
    (line,) = _approvals(settings, run_id, "qc")
    winner = ("dr-ada", "dr-bo")[[r.status_code for r in results].index(303)]
    assert line["actor"] == winner
    (result,) = verify_dir(settings.audit_dir, run_id)
    assert result.ok, result.reason
    assert app.state.runs.status(run_id).waiting_for == "sign-off"


# --- signed report and PDF ------------------------------------------------------------------------

def test_signed_report_pdf_renders_and_matches_audit(env, tmp_path):
    if not (shutil.which("pdftoppm") and shutil.which("pdfinfo")):
        pytest.skip("poppler-utils (pdftoppm, pdfinfo) not installed: apt-get install -y poppler-utils")
    app, settings, run_id = env
    _to_signoff(app, run_id)
    client = _client(app)
    token = _login(client, "dr-ada", PASSWORD)
    res = client.post(f"/runs/{run_id}/decide", data={"decision": "approved", "expect": "sign-off", "version": "1",
                                                    "comment": "agree", "csrf_token": token})
    assert res.status_code == 303
    signed = app.state.runs.services.reports.load(run_id)
    assert signed.status == "approved" and signed.signature.reviewer == "dr-ada"
    (audit_line,) = [r for r in _events(settings, run_id) if r["event"] == "report_signed"]

    page = client.get(f"/runs/{run_id}/report").text
    assert signed.signature.report_sha256 in page and "matches" in page and 'id="decide"' not in page
    assert stat.S_IMODE(os.stat(app.state.runs.services.reports.path(run_id, signed.version, ".json")).st_mode) == 0o444

    pdf = client.get(f"/runs/{run_id}/export/v{signed.version}.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert client.get(f"/runs/{run_id}/export/v{signed.version}.pdf").content == pdf.content  # deterministic
    path = tmp_path / "signed.pdf"
    path.write_bytes(pdf.content)
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    embedded = re.search(r"^Subject:\s+report_sha256=([0-9a-f]{64})$", info, re.MULTILINE).group(1)
    assert embedded == audit_line["report_sha256"] == signed.content_sha256()
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE).group(1))
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(path), str(tmp_path / "page")], check=True, timeout=120)
    rendered = sorted(tmp_path.glob("page*.png"))
    assert len(rendered) == pages >= 2
    from PIL import Image

    for p in rendered:
        with Image.open(p) as im:
            assert im.size[0] > 200 and im.getextrema() != ((255, 255), (255, 255), (255, 255))  # not blank
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert "dr-ada" in text and audit_line["report_sha256"] in text.replace("\n", "")
    (result,) = verify_dir(settings.audit_dir, run_id)
    assert result.ok


# --- command line ---------------------------------------------------------------------------------

@pytest.fixture
def cli_logging():
    """The CLI configures structlog globally (warnings only); put the test session's set-up back afterwards."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_decision_recorded_under_cli_logging(env, cli_logging):
    """`cardiomics review` serves after the CLI set logging to warnings: audit lines must still be written."""
    from cardiomics.logging import configure

    app, settings, run_id = env
    configure(verbose=False)
    client = _client(app)
    token = _login(client, "dr-ada", PASSWORD)
    res = client.post(f"/runs/{run_id}/decide", data={"decision": "rejected", "comment": "motion", "expect": "qc-approval",
                                                    "csrf_token": token})
    assert res.status_code == 303, res.text
    (line,) = _approvals(settings, run_id, "qc")
    assert line["actor"] == "dr-ada"


def test_cli_add_user_and_loopback_rule(settings, cli_logging):
    from typer.testing import CliRunner

    from cardiomics.cli import app
    from cardiomics.review.accounts import Accounts
    from cardiomics.review.server import is_loopback

    runner = CliRunner()
    res = runner.invoke(app, ["review", "add-user", "dr-cli", "--password-stdin"], input=PASSWORD + "\n")
    assert res.exit_code == 0, res.output
    assert Accounts(settings.home).check("dr-cli", PASSWORD)
    res = runner.invoke(app, ["review", "add-user", "dr-cli", "--password-stdin"], input=PASSWORD + "\n")
    assert res.exit_code == 2
    res = runner.invoke(app, ["review", "--host", "0.0.0.0", "--port", "1"])
    assert res.exit_code == 2 and "refused" in res.output
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("example.org")


def test_cli_remove_user_ends_that_reviewers_sessions(env, monkeypatch, cli_logging):
    import structlog
    from typer.testing import CliRunner

    from cardiomics.cli import app as cli
    from cardiomics.review.sessions import COOKIE

    app, settings, run_id = env
    monkeypatch.setenv("CARDIOMICS_HOME", str(settings.home))
    monkeypatch.setenv("CARDIOMICS_AUDIT_DIR", str(settings.audit_dir))
    bo, ada = _client(app), _client(app)
    bo_token = _login(bo, "dr-bo", PASSWORD + "!")
    _login(ada, "dr-ada", PASSWORD)
    cookie = bo.cookies.get(COOKIE)
    path = settings.home / "reviewers.json"
    os.chmod(path, 0o640)  # an owner's choice of mode survives the rewrite

    runner = CliRunner()
    saved = structlog.get_config()
    res = runner.invoke(cli, ["review", "remove-user", "dr-bo", "--yes"])
    assert res.exit_code == 0, res.output
    assert "reviewer dr-bo removed" in res.output
    res = runner.invoke(cli, ["review", "users"])
    assert res.exit_code == 0 and res.output.split() == ["dr-ada"]
    structlog.configure(**saved)  # the CLI bound log lines to the runner's stderr, closed once it returned
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert not [p for p in os.listdir(settings.home) if p.endswith(".tmp")]  # no temporary file left beside it

    replay = _client(app)  # the cookie from the login, sent again after the removal
    replay.cookies.set(COOKIE, cookie)
    res = replay.get("/")
    assert res.status_code == 303 and res.headers["location"].startswith("/login")
    res = bo.post(f"/runs/{run_id}/decide", data={"decision": "approved", "expect": "qc-approval", "csrf_token": bo_token})
    assert res.status_code == 401
    assert _try_login(_client(app), "dr-bo", PASSWORD + "!").status_code == 401
    assert ada.get("/").status_code == 200  # other reviewers' sessions go on
    assert _approvals(settings, run_id, "qc") == []


def test_cli_remove_user_unknown_name_and_declined_prompt_change_nothing(settings, cli_logging):
    from typer.testing import CliRunner

    from cardiomics.cli import app
    from cardiomics.review.accounts import Accounts

    accounts = Accounts(settings.home)
    accounts.add("dr-ada", PASSWORD)
    before = accounts.path.read_bytes()
    runner = CliRunner()

    res = runner.invoke(app, ["review", "remove-user", "dr-nobody", "--yes"])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "unknown-reviewer" in text and "cardiomics review users" in text and "Traceback" not in text

    res = runner.invoke(app, ["review", "remove-user", "dr-ada"], input="n\n")
    assert res.exit_code == 1 and "Remove reviewer dr-ada?" in res.output and "nothing changed" in res.output
    assert accounts.names() == ["dr-ada"] and accounts.path.read_bytes() == before

    res = runner.invoke(app, ["review", "remove-user", "dr-ada"], input="y\n")
    assert res.exit_code == 0, res.output
    assert accounts.names() == [] and stat.S_IMODE(os.stat(accounts.path).st_mode) == 0o600


def test_accounts_changed_at_once_by_two_processes_keep_both_changes(tmp_path):
    """add and remove read, change and rewrite the file under one lock: concurrent commands both land."""
    import multiprocessing

    from cardiomics.review.accounts import Accounts

    home = tmp_path / "home"
    Accounts(home).add("dr-keep", "a-long-password")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_reviewer, args=(home, f"dr-{i}")) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    assert Accounts(home).names() == sorted(["dr-keep", *(f"dr-{i}" for i in range(6))])


def _add_reviewer(home, name: str) -> None:
    from cardiomics.review.accounts import Accounts

    Accounts(home).add(name, "a-long-password")


def test_cli_account_changes_are_audited_once_each_without_secrets(settings, cli_logging):
    """add-user, add-user --replace and remove-user each write one access line; refused or declined ones write none."""
    from typer.testing import CliRunner

    from cardiomics.access import os_user
    from cardiomics.cli import app

    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None):
        return runner.invoke(app, ["review", *args], input=stdin)

    def stored() -> list[str]:  # the salt and scrypt digest on file for dr-cli
        record = json.loads((settings.home / "reviewers.json").read_text())["users"]["dr-cli"]
        return [record["salt"], record["hash"]]

    assert invoke("add-user", "dr-cli", "--password-stdin", stdin=PASSWORD + "\n").exit_code == 0
    on_file = stored()
    assert invoke("add-user", "dr-cli", "--password-stdin", stdin=PASSWORD + "\n").exit_code == 2  # exists
    assert invoke("add-user", "dr-new", "--password-stdin", stdin="short\n").exit_code == 2  # weak password
    assert invoke("add-user", "dr-cli", "--password-stdin", "--replace", stdin=PASSWORD + "?\n").exit_code == 0
    on_file += stored()
    assert invoke("remove-user", "dr-nobody", "--yes").exit_code == 2  # unknown name
    assert invoke("remove-user", "dr-cli", stdin="n\n").exit_code == 1  # declined
    assert invoke("remove-user", "dr-cli", stdin="y\n").exit_code == 0

    lines = access_lines(settings.audit_dir)
    assert [(r["event"], r["name"], r["actor"]) for r in lines] == [
        ("reviewer_added", "dr-cli", os_user()),
        ("reviewer_password_reset", "dr-cli", os_user()),
        ("reviewer_removed", "dr-cli", os_user()),
    ]
    assert all(r["os_uid"] == os.getuid() for r in lines)
    (result,) = verify_dir(settings.audit_dir)
    assert result.ok and result.lines == 3 and result.run_id.startswith("access-")
    text = next(settings.audit_dir.glob("access-*.jsonl")).read_text()
    for secret in (PASSWORD, *on_file):
        assert secret not in text


def test_a_new_account_that_cannot_be_audited_is_undone_a_withdrawal_kept(tmp_path):
    from cardiomics.errors import AuditError
    from cardiomics.review.accounts import Accounts

    home, audit = tmp_path / "home", tmp_path / "audit"
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # the trail cannot be created under a file
    with pytest.raises(AuditError) as exc:
        Accounts(home, audit_dir=blocked).add("dr-first", PASSWORD)
    assert exc.value.code == "access-not-audited" and "undone" in exc.value.message and str(blocked) in exc.value.hint
    assert not (home / "reviewers.json").exists()  # the first account's file is gone again

    Accounts(home, audit_dir=audit).add("dr-ada", PASSWORD)
    Accounts(home, audit_dir=audit).add("dr-cy", PASSWORD)
    before = (home / "reviewers.json").read_bytes()
    accounts = Accounts(home, audit_dir=blocked)
    with pytest.raises(AuditError):
        accounts.add("dr-bo", PASSWORD)
    assert (home / "reviewers.json").read_bytes() == before and accounts.names() == ["dr-ada", "dr-cy"]
    # a new password (the old one may have leaked) and a removal stay in place though the trail failed
    with pytest.raises(AuditError) as exc:
        accounts.add("dr-ada", PASSWORD + "!", replace=True)
    assert "withdrawn all the same" in exc.value.message
    assert accounts.check("dr-ada", PASSWORD + "!") and not accounts.check("dr-ada", PASSWORD)
    with pytest.raises(AuditError):
        accounts.remove("dr-cy")
    assert Accounts(home).names() == ["dr-ada"]
    (trail,) = audit.glob("access-*.jsonl")
    assert [json.loads(line)["event"] for line in trail.read_text().splitlines()] == ["reviewer_added", "reviewer_added"]
    Accounts(home).add("dr-quiet", PASSWORD)  # a store given no audit folder writes no trail (the review app only reads)
    assert list(audit.iterdir()) == [trail] and len(trail.read_text().splitlines()) == 2
