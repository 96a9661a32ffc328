"""`cardiomics chat`: guided mode over stdin, and a scripted-model conversation to a signed report.

The scripted conversation is orchestration only (phantom labels stand in for the segmenter).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

from langchain_core.messages import AIMessage
from rich.console import Console

from cardiomics.audit import verify_dir

from conftest import assert_no_identifiers
from llm_helpers import analysis_and_explanation, narrative_reply, standard_processing


def test_guided_mode_over_stdin(settings, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "CARDIOMICS_LLM_MODEL")}
    env.update(CARDIOMICS_HOME=str(settings.home), CARDIOMICS_AUDIT_DIR=str(settings.audit_dir), COLUMNS="200")
    lines = "help\nstatus\nwhy is segment 9 flagged?\ncompare with the cohort\nfrobnicate\nquit\n"
    res = subprocess.run([sys.executable, "-m", "cardiomics.cli", "chat"], input=lines, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "analyse PATH" in out and "Guided mode" in out and "CARDIOMICS_LLM_MODEL" in out
    assert "no active run" in out  # status without a run
    assert "no cohort comparison yet" in out
    (trail,) = [r for r in verify_dir(settings.audit_dir) if r.run_id.startswith("chat-")]
    assert trail.ok and trail.lines >= 1 + 2 * 5  # start + each message and reply


def test_scripted_conversation_to_signed_report(settings, phantom_study):
    """The whole chat path on the phantom study with the real segmentation network."""
    from cardiomics.agents.llm import LLMPlanner
    from cardiomics.agents.llm.scripted import ScriptedChatModel
    from cardiomics.chat import ChatSession

    folder, _ = phantom_study

    def segment_answer(messages):
        import json

        text = messages[-1].content
        res = json.loads(next(line for line in text.splitlines() if line.startswith("{")))
        seg = next(s for s in res["regional_function"]["segments"] if s["segment"] == 9)
        e = seg["ed_wall_thickness_mm"]
        return AIMessage(f"Segment 9 ({seg['name']}) is {e['flag']}: end-diastolic wall thickness {e['value']:.1f} mm "
                         f"against a reference of {e['reference']['lower']:.1f}–{e['reference']['upper']:.1f} mm.")

    script = standard_processing() + analysis_and_explanation() + [narrative_reply(), segment_answer]
    model = ScriptedChatModel(script)
    console = Console(file=io.StringIO(), width=200)
    names = iter(["dr-qc", "dr-sign"])
    chat = ChatSession(settings, LLMPlanner(model), console, ask=lambda prompt: next(names))
    try:
        r1 = chat.handle(f"please analyse {folder} height 170 weight 70")
        assert "waits for QC approval" in r1.text and chat.run_id
        r2 = chat.handle("approve")
        assert "sign-off" in r2.text
        r3 = chat.handle("why is segment 9 flagged?")
        assert "Segment 9" in r3.text and "Not grounded" not in r3.text
        r4 = chat.handle("compare with the cohort")
        assert "no cohort comparison yet" in r4.text  # this scripted analysis did not call the fusion tools
        r5 = chat.handle("approve")
        assert "Signed report" in r5.text
        rep = chat.runs.services.reports.load(chat.run_id)
        assert rep.status == "approved" and rep.signature.reviewer == "dr-sign"
        recs = chat.runs.services.audit(chat.run_id).records()
        events = [x["event"] for x in recs]
        assert events.count("chat_user") == 5 and events.count("chat_assistant") == 5
        # in order: the chat message that started the run, the model's work, the approvals, the signature
        assert events.index("llm_request") < events.index("approval") < events.index("answer_grounding") < events.index("report_signed")
        assert verify_dir(settings.audit_dir, chat.run_id)[0].ok
        for text in model.request_texts():
            assert_no_identifiers(text, "LLM request")
            assert str(folder) not in text
        assert str(folder) not in chat.transcript.read_text()
    finally:
        chat.close()


def test_cohort_answer_lists_the_runs_neighbours(settings):
    """`compare with the cohort` shows the nearest reference patients the analysis step found."""
    from cardiomics.chat import ChatSession

    chat = ChatSession(settings, None, Console(file=io.StringIO(), width=200), ask=lambda prompt: "dr")
    try:
        neighbours = [{"rank": i, "patient_id": f"ref-{i:05d}", "distance": 0.5 + i / 10, "site": "A",
                       "phenotypes": {"lv_ef_pct": 55.0 + i}} for i in range(1, 6)]
        chat.run_id = "run-x"
        chat._state = lambda: {"results": {"cohort_neighbours": {"cohort": "synthetic reference cohort", "note": "synthetic",
                                                                  "neighbours": neighbours}}}
        reply = chat.cohort()
        assert reply.table is not None and reply.table.row_count == 5
    finally:
        chat.close()
