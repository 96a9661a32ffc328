"""``cardiomics chat``: a terminal conversation over the same graph, checkpoints and audit trail.

The conversation never holds state of its own that matters: runs live in the checkpointer, decisions
go through ``Runs.decide`` (the same lock, the same ``expect`` guard as the CLI and the review page),
and every user message and reply is audited (hash and size) in the active run's trail and in the
session's own trail. With a model configured, free questions are answered by the explanation role
and grounded; without one, the session is guided (commands only) and says how to configure a model.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from cardiomics.audit import AuditTrail, verify_dir
from cardiomics.config import Settings
from cardiomics.errors import CardiomicsError, InputError, PolicyError
from cardiomics.hashing import sha256_text

log = structlog.get_logger(__name__)

HELP = """Commands:
  analyse PATH [height CM] [weight KG] [sex male|female]   start a run on a DICOM folder or NIfTI file
  status                  where the active run stands
  approve / reject        decide at the checkpoint the run waits at (asks for your name)
  request changes TEXT    send the draft report back with a comment (at sign-off)
  report                  show the latest report of the active run
  resume                  continue a run paused because the language model was unreachable
  runs / use RUN_ID       list runs / switch to one
  verify                  check the active run's audit trail
  help / quit"""

_PATH = re.compile(r"""(?:^|\s)(?:"([^"]+)"|'([^']+)'|((?:/|~|\.{1,2}/)\S*))""")
_NUM = {"height": r"height\s*(?:=|:)?\s*(\d+(?:\.\d+)?)", "weight": r"weight\s*(?:=|:)?\s*(\d+(?:\.\d+)?)"}


@dataclass
class Reply:
    text: str
    style: str = "assistant"  # assistant | error | notice
    markdown: bool = False
    table: Any = None


@dataclass
class ChatSession:
    settings: Settings
    planner: Any = None  # an LLMPlanner, or None: guided mode
    console: Console = field(default_factory=Console)
    ask: Callable[[str], str] = input
    run_id: str | None = None

    def __post_init__(self) -> None:
        from cardiomics.agents.runs import Runs

        self.settings = self.settings.ensure()
        self.runs = Runs(self.settings, planner=self.planner)
        now = datetime.now(UTC)
        self.session_id = f"chat-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        self.trail = AuditTrail(self.settings.audit_dir, self.session_id)
        self.transcript = self.settings.home / "chat" / f"{self.session_id}.jsonl"
        self.transcript.parent.mkdir(parents=True, exist_ok=True)
        self._turn = 0
        self.trail.append("chat_start", "system", mode="llm" if self.planner else "guided",
                          model=getattr(self.planner, "model_name", None))
        if self.planner is not None:
            self.planner.on_token = self._stream_token
        self._streamed = False

    # -- plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        self.runs.close()

    def _stream_token(self, text: str) -> None:
        self._streamed = True
        self.console.print(text, end="", highlight=False, markup=False)

    def _record(self, role: str, text: str, intent: str) -> None:
        """Audit one message (hash and size) in the session trail and the active run's trail; keep the text locally."""
        self._turn += 1
        fields = {"session": self.session_id, "turn": self._turn, "intent": intent, "sha256": sha256_text(text), "chars": len(text)}
        event = "chat_user" if role == "user" else "chat_assistant"
        if role == "user":
            self._last_user_sha, self._last_user_chars = fields["sha256"], fields["chars"]
        self.trail.append(event, role, run=self.run_id, **fields)
        if self.run_id:
            self.runs.services.audit(self.run_id).append(event, role, **fields)
        with open(self.transcript, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"turn": self._turn, "role": role, "run": self.run_id, "text": text}, ensure_ascii=False) + "\n")

    def show(self, reply: Reply) -> None:
        if reply.table is not None:
            self.console.print(reply.table)
        if self._streamed:
            self.console.print()
            self._streamed = False
            if reply.style == "assistant" and not reply.markdown:
                return
        style = {"error": "bold red", "notice": "yellow"}.get(reply.style)
        if reply.markdown:
            self.console.print(Markdown(reply.text))
        else:
            self.console.print(reply.text, style=style, highlight=False, markup=False)

    # -- one turn -------------------------------------------------------------------------------
    def handle(self, text: str) -> Reply | None:
        """Answer one message; ``None`` ends the session."""
        text = text.strip()
        if not text:
            return Reply("")
        intent, fn = self._route(text)
        if intent == "quit":
            self._record("user", "quit", intent)
            return None
        before = self.run_id
        self._record("user", self._masked(text, intent), intent)
        try:
            reply = fn(text)
        except CardiomicsError as exc:
            reply = Reply(f"{exc.kind}[{exc.code}]: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), "error")
        except Exception as exc:  # LLMUnavailable and friends: the run is paused, never lost
            if getattr(exc, "kind", "") != "LLMUnavailable":
                raise
            reply = Reply(f"{exc}\nThe run {self.run_id or ''} is paused at its last checkpoint; type `resume` when the "
                          "model answers again.", "error")
        if self.run_id and self.run_id != before:  # the message that started (or opened) the run belongs to it too
            self.runs.services.audit(self.run_id).append("chat_user", "user", session=self.session_id, turn=self._turn,
                                                         intent=intent, sha256=self._last_user_sha, chars=self._last_user_chars)
        self._record("assistant", reply.text, intent)
        return reply

    def _masked(self, text: str, intent: str) -> str:
        """The transcript keeps what was asked, with the study's location reduced to a hash (it may name a patient)."""
        if intent != "analyse":
            return text
        m = _PATH.search(text)
        path = next((g for g in m.groups() if g), None) if m else None
        return text.replace(path, f"<path sha256:{sha256_text(path)[:12]}>") if path else text

    def _route(self, text: str) -> tuple[str, Callable[[str], Reply]]:
        low = text.lower().strip()
        word = low.split()[0] if low.split() else ""
        table: list[tuple[bool, str, Callable[[str], Reply]]] = [
            (low in ("quit", "exit", "bye", "q"), "quit", lambda t: Reply("")),
            (word in ("help", "?") or low == "h", "help", self.help),
            (word in ("analyse", "analyze") or (bool(re.search(r"\banaly[sz]e\b", low)) and bool(_PATH.search(text))), "analyse", self.analyse),
            (word == "status", "status", self.status),
            (word in ("approve", "approved", "sign", "accept"), "approve", lambda t: self.decide(t, "approved")),
            (word in ("reject", "rejected"), "reject", lambda t: self.decide(t, "rejected")),
            (low.startswith(("request changes", "request-changes", "changes")), "changes", lambda t: self.decide(t, "changes-requested")),
            (word == "report", "report", self.report),
            (word == "resume", "resume", self.resume),
            (word == "runs", "runs", self.list_runs),
            (word in ("use", "open"), "use", self.use),
            (word == "verify", "verify", self.verify),
            ("cohort" in low or ("compare" in low and "cohort" in low), "cohort", self.cohort),
        ]
        for cond, name, fn in table:
            if cond:
                return name, fn
        return "question", self.question

    # -- commands -------------------------------------------------------------------------------
    def help(self, _t: str = "") -> Reply:
        from cardiomics.agents.llm.config import HOW_TO_CONFIGURE

        mode = (f"A language model ({self.planner.model_name}) drives the graph; ask questions in plain words." if self.planner
                else "Guided mode. " + HOW_TO_CONFIGURE)
        return Reply(f"{HELP}\n\n{mode}", "notice")

    def analyse(self, text: str) -> Reply:
        m = _PATH.search(text)
        path = next((g for g in m.groups() if g), None) if m else None
        if path is None:
            try:
                parts = shlex.split(text)
            except ValueError:
                parts = text.split()
            path = parts[1] if len(parts) > 1 else None
        if not path:
            raise InputError("no-path", "which study? say `analyse /path/to/study`", hint="a DICOM folder or a NIfTI file")
        path = str(Path(path).expanduser())
        opts: dict[str, Any] = {}
        for key, pat in _NUM.items():
            if (found := re.search(pat, text, re.I)):
                opts[f"{key}_cm" if key == "height" else f"{key}_kg"] = float(found.group(1))
        if (sex := re.search(r"\b(female|male)\b", text, re.I)):
            opts["sex"] = sex.group(1).lower()
        before = set(self.settings.runs_dir.glob("run-*.json"))
        try:
            with self.console.status("Analysing: load, QC, segment, cardiac function…"):
                st = self.runs.start(path, **opts)
        except Exception:
            new = sorted(set(self.settings.runs_dir.glob("run-*.json")) - before)
            if new:
                self.run_id = new[-1].stem
            raise
        self.run_id = st.run_id
        return self._status_reply(st, table=self._function_table())

    def _state(self) -> dict[str, Any]:
        if not self.run_id:
            raise InputError("no-run", "no active run", hint="start one with `analyse PATH` or pick one with `use RUN_ID`")
        return self.runs.graph.get_state(self.runs._config(self.run_id)).values or {}

    def _function_table(self):
        func = (self._state().get("results") or {}).get("cardiac_function")
        if not func:
            return None
        table = Table(title="Cardiac function (awaiting review)")
        for col in ("measure", "value", "reference", "flag"):
            table.add_column(col)
        for key in ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_pct", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct"):
            e = func.get(key)
            if e:
                ref = f"{e['reference']['lower']:g}–{e['reference']['upper']:g}" if e.get("reference") else "—"
                table.add_row(key, f"{e['value']:.1f} {e['unit']}", ref, e["flag"])
        return table

    def _status_reply(self, st, table=None) -> Reply:
        lines = [f"run {st.run_id}: {st.status}"]
        if st.waiting_for == "qc-approval":
            lines.append("The segmentation waits for QC approval: say `approve` or `reject`.")
        elif st.waiting_for == "sign-off":
            lines.append(f"Draft report v{st.report_version} waits for sign-off: `report` to read it, then `approve`, "
                         "`reject` or `request changes TEXT`.")
        elif st.status == "approved":
            lines.append(f"Signed report: v{st.report_version}.")
        elif st.status in ("processing", "analysis", "explanation", "interrupted"):
            lines.append("The run is paused between steps; `resume` continues it.")
        if st.error:
            lines.append(f"{st.error['error']}[{st.error['code']}]: {st.error['message']}")
        return Reply("\n".join(lines), "error" if st.error else "assistant", table=table)

    def status(self, _t: str = "") -> Reply:
        self._state()
        return self._status_reply(self.runs.status(self.run_id))

    def decide(self, text: str, decision: str) -> Reply:
        st = self.runs.status(self._need_run())
        if st.waiting_for is None:
            return Reply(f"run {st.run_id} is {st.status}; it waits for no decision.", "notice")
        comment = re.sub(r"^\s*(approve[d]?|sign|accept|reject(ed)?|request[- ]changes|changes)\b[:,]?\s*", "", text, flags=re.I)
        if decision == "changes-requested" and not comment:
            comment = self.ask("What should change? ").strip()
        reviewer = self.ask(f"Reviewer name for this {st.waiting_for} decision: ").strip()
        if not reviewer:
            return Reply("No name given: nothing was decided.", "notice")
        with self.console.status("Resuming the run…"):
            st = self.runs.decide(st.run_id, reviewer, decision, comment, expect=st.waiting_for)
        return self._status_reply(st)

    def _need_run(self) -> str:
        self._state()
        return self.run_id  # type: ignore[return-value]

    def report(self, _t: str = "") -> Reply:
        rep = self.runs.services.reports.load(self._need_run())
        flags = ("\n\n**Grounding problems (shown to the reviewer):**\n" + "\n".join(f"- {p}" for p in rep.grounding_flags)
                 if rep.grounding_flags else "")
        html = self.runs.services.reports.path(rep.run_id, rep.version, ".html")
        sig = f"\n\nSigned by {rep.signature.reviewer} ({rep.signature.decision})." if rep.signature else ""
        return Reply(f"**Report v{rep.version} ({rep.status})**\n\n{rep.narrative}{flags}{sig}\n\nHTML: {html}", markdown=True)

    def resume(self, _t: str = "") -> Reply:
        run_id = self._need_run()
        try:
            with self.console.status("Resuming…"):
                st = self.runs.resume(run_id)
        except PolicyError:  # waiting for a reviewer, or ended: nothing to resume
            return self._status_reply(self.runs.status(run_id))
        return self._status_reply(st, table=self._function_table())

    def list_runs(self, _t: str = "") -> Reply:
        table = Table()
        for col in ("run", "status", "waiting for", "report"):
            table.add_column(col)
        for st in self.runs.list()[:20]:
            table.add_row(st.run_id, st.status, st.waiting_for or "—", f"v{st.report_version}" if st.report_version else "—")
        return Reply("", table=table)

    def use(self, text: str) -> Reply:
        parts = text.split()
        if len(parts) < 2:
            raise InputError("no-run-id", "which run? say `use RUN_ID`", hint="`runs` lists them")
        st = self.runs.status(parts[1])
        self.run_id = st.run_id
        return self._status_reply(st)

    def verify(self, _t: str = "") -> Reply:
        (res,) = verify_dir(self.settings.audit_dir, self._need_run())
        return Reply(f"audit trail {res.run_id}: {res.lines} lines, " + ("chain intact" if res.ok else f"FAILS at line {res.first_bad_line}: {res.reason}"),
                     "assistant" if res.ok else "error")

    def cohort(self, _t: str = "") -> Reply:
        """The run's nearest patients in the synthetic reference cohort, as the analysis step found them."""
        state = self._state() if self.run_id else {}
        nb = (state.get("results") or {}).get("cohort_neighbours")
        if not nb:
            return Reply("There is no cohort comparison yet: it is computed in the analysis step, after QC approval "
                         "(`analyse PATH`, then `approve`). Until then the values are compared only with published "
                         "reference ranges.", "notice")
        table = Table(title=f"Nearest patients in the {nb['cohort']} (synthetic, research use only)")
        for col in ("rank", "patient", "latent distance", "site", "LVEF %"):
            table.add_column(col)
        for n in nb["neighbours"]:
            ef = n["phenotypes"].get("lv_ef_pct")
            table.add_row(str(n["rank"]), n["patient_id"], f"{n['distance']:.2f}", str(n["site"]), f"{ef:.1f}" if ef is not None else "—")
        return Reply(nb.get("note", ""), "notice", table=table)

    def question(self, text: str) -> Reply:
        state = self._state() if self.run_id else {}
        if self.planner is None:
            if (m := re.search(r"segment\s*(\d{1,2})", text, re.I)) and state:
                return self._segment_answer(state, int(m.group(1)))
            from cardiomics.agents.llm.config import HOW_TO_CONFIGURE

            return Reply("In guided mode I answer commands only (type `help`). " + HOW_TO_CONFIGURE, "notice")
        if not state.get("results"):
            return Reply("There is no run with results to ask about yet: start one with `analyse PATH`.", "notice")
        from cardiomics.agents.llm.answer import answer

        self._turn_epoch = getattr(self, "_turn_epoch", 0) + 1
        ex = self.runs.services.executor(self.run_id, epoch=f"chat:{self.session_id}:{self._turn_epoch}")
        ans = answer(self.planner, ex, state, text)
        tail = ("\n\n**Not grounded** (check before relying on it):\n" + "\n".join(f"- {p}" for p in ans.problems)) if ans.problems else ""
        return Reply(ans.text + tail, markdown=True)

    def _segment_answer(self, state: dict[str, Any], n: int) -> Reply:
        """Guided mode's one free answer: a segment's measurements, straight from the tool output."""
        reg = (state.get("results") or {}).get("regional_function")
        seg = next((s for s in (reg or {}).get("segments", []) if s.get("segment") == n), None)
        if seg is None:
            return Reply(f"The run has no regional measurement for segment {n}.", "notice")
        parts = []
        for key, label in (("ed_wall_thickness_mm", "end-diastolic wall thickness"),
                           ("ed_max_wall_thickness_mm", "maximal end-diastolic wall thickness"),
                           ("systolic_thickening_pct", "systolic thickening")):
            e = seg.get(key)
            if e:
                r = e.get("reference")
                if not r:
                    ref = ""
                elif r.get("inclusive"):  # published cut-offs: the limits themselves are abnormal
                    ref = f", abnormal at ≤ {r['lower']:g} or ≥ {r['upper']:g} {e['unit']}"
                else:
                    ref = f", reference {r['lower']:g}–{r['upper']:g} {e['unit']}"
                parts.append(f"{label} {e['value']:.1f} {e['unit']} ({e['flag']}{ref})")
        flagged = [k for k in ("ed_wall_thickness_mm", "ed_max_wall_thickness_mm", "systolic_thickening_pct")
                   if (seg.get(k) or {}).get("flag") in ("low", "high")]
        verdict = ("It is flagged because a value lies outside its reference range." if flagged
                   else "It is not flagged: no value lies outside a reference range.")
        return Reply(f"Segment {n} ({seg.get('name', '')}): " + "; ".join(parts) + f". {verdict}")


def open_session(settings: Settings | None = None, llm_config: str | None = None, console: Console | None = None,
                 ask: Callable[[str], str] | None = None, planner: Any = None) -> ChatSession:
    from cardiomics.agents.llm import planner_from_settings

    settings = settings or Settings.from_env()
    if planner is None:
        planner = planner_from_settings(settings, llm_config)
    return ChatSession(settings, planner, console or Console(), ask or input)


def run_repl(session: ChatSession, read: Callable[[str], str]) -> None:
    session.show(session.help())
    while True:
        try:
            line = read("you> ")
        except (EOFError, KeyboardInterrupt):
            break
        reply = session.handle(line)
        if reply is None:
            break
        if reply.text or reply.table is not None:
            session.show(reply)
