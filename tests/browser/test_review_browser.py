"""The review app in a real headless Chromium (Debian's package) driven by Playwright.

Flow: log in -> runs list -> QC page -> approve -> report -> click a number (provenance panel)
-> request changes -> diff -> approve and sign -> approved, audit trail verifies.
Screenshots of the main pages go to tests/artifacts/screenshots/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cardiomics.audit import verify_dir

CHROMIUM = os.environ.get("CARDIOMICS_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
PASSWORD = "correct horse battery"


@pytest.fixture
def review_server(tmp_path, phantom_study, monkeypatch):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
    from cardiomics.agents.runs import Runs
    from cardiomics.config import Settings
    from cardiomics.review import create_app
    from cardiomics.review.accounts import Accounts
    from cardiomics.review.server import serve_in_thread

    monkeypatch.delenv("CARDIOMICS_REVIEW_USER_HEADER", raising=False)
    settings = Settings(home=tmp_path / "home", audit_dir=tmp_path / "audit").ensure()
    runs = Runs(settings)
    st = runs.start(str(phantom_study[0]), height_cm=170, weight_kg=70)
    assert st.waiting_for == "qc-approval", st
    Accounts(settings.home).add("dr-ada", PASSWORD)
    app = create_app(settings, runs=runs)
    with serve_in_thread(app) as base:
        yield base, runs, st.run_id
    runs.close()


def test_review_flow_in_chromium(review_server):
    from playwright.sync_api import expect, sync_playwright

    base, runs, run_id = review_server
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        try:
            page.goto(base + "/")
            expect(page).to_have_url(f"{base}/login?next=/")
            page.fill("input[name=username]", "dr-ada")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")

            row = page.locator(f"tr[data-run='{run_id}']")
            expect(row).to_contain_text("awaiting-qc")
            expect(row).to_contain_text("QC approval of the segmentation")
            expect(page.locator("#reviewer")).to_have_text("dr-ada")
            page.screenshot(path=str(SHOTS / "01-runs.png"), full_page=True)

            row.locator("a").first.click()
            expect(page).to_have_url(f"{base}/runs/{run_id}/qc")
            slices = page.locator("#slices img")
            n = runs.graph.get_state(runs._config(run_id)).values["results"]["segment"]["n_slices"]
            expect(slices).to_have_count(2 * n)
            for i in range(slices.count()):
                slices.nth(i).scroll_into_view_if_needed()
            page.wait_for_function("Array.from(document.querySelectorAll('#slices img')).every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(SHOTS / "02-qc.png"), full_page=True)
            page.click("#qc-approve")

            expect(page).to_have_url(f"{base}/runs/{run_id}/report")
            expect(page.locator("#run-status")).to_have_text("awaiting-signoff")
            page.wait_for_function("Array.from(document.querySelectorAll('figure.fig img')).every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(SHOTS / "03-report.png"), full_page=True)

            page.click("#num-lv_ef_pct")
            panel = page.locator("#prov-panel")
            expect(panel).to_have_attribute("data-state", "ready")
            prov = runs.graph.get_state(runs._config(run_id)).values["results"]["cardiac_function"]["provenance"]
            model = prov["models"][0]
            expect(panel.locator("#prov-meta")).to_contain_text("cardiac_function")
            expect(panel.locator("#prov-meta")).to_contain_text(prov["tool_version"])
            expect(panel.locator("#prov-models")).to_contain_text(f"{model['id']} {model['version']}")
            expect(panel.locator("#prov-models")).to_contain_text(model["weights_sha256"])
            expect(panel.locator("#prov-inputs")).to_contain_text(next(iter(prov["input_hashes"].values())))
            expect(panel.locator(".audit-line")).to_have_count(1)
            expect(panel.locator(".audit-line")).to_contain_text("tool_call")
            expect(panel.locator(".audit-line")).to_contain_text(prov["result_id"])
            expect(panel.locator(".approval-line").first).to_contain_text("approval")
            expect(panel.locator(".approval-line").first).to_contain_text("by dr-ada")
            page.screenshot(path=str(SHOTS / "04-provenance.png"))
            page.click("#prov-close")

            page.click("#sign-changes")  # no comment: the browser refuses before posting
            assert runs.status(run_id).report_version == 1
            page.fill("#comment", "Please mention the RV size.")
            page.click("#sign-changes")
            expect(page.locator("li.current")).to_contain_text("v2")
            page.select_option("select[name=a]", "1")
            page.select_option("select[name=b]", "2")
            page.click(".diffform button")
            expect(page.locator("#narrative-diff ins")).to_contain_text("Please mention the RV size.")
            page.screenshot(path=str(SHOTS / "05-diff.png"), full_page=True)

            page.goto(f"{base}/runs/{run_id}/report")
            page.fill("#comment", "Agree with the measurements.")
            page.click("#sign-approve")
            expect(page.locator("#report-status")).to_have_text("approved")
            expect(page.locator("#run-status")).to_have_text("approved")
            expect(page.locator("#signature")).to_contain_text("dr-ada")
            signed = runs.services.reports.load(run_id)
            expect(page.locator("#signed-hash")).to_have_text(signed.signature.report_sha256)
            expect(page.locator("#signature")).to_contain_text("matches")
            expect(page.locator("#export-pdf")).to_be_visible()
            page.wait_for_function("Array.from(document.querySelectorAll('figure.fig img')).every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(SHOTS / "06-signed.png"), full_page=True)
        finally:
            browser.close()

    st = runs.status(run_id)
    assert st.status == "approved" and st.waiting_for is None and st.report_version == 3
    records = runs.services.audit(run_id).records()
    assert [(r["checkpoint"], r["decision"], r["actor"]) for r in records if r["event"] == "approval"] == [
        ("qc", "approved", "dr-ada"), ("signoff", "changes-requested", "dr-ada"), ("signoff", "approved", "dr-ada")]
    (result,) = verify_dir(runs.settings.audit_dir, run_id)
    assert result.ok, result.reason
