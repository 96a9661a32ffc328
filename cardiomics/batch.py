"""Cohort batch analysis: every study of a folder through the standard protocol, on Dask.

A cohort is hundreds of studies that nobody reviews one by one before the numbers are needed, so
batch mode runs the deterministic planner's processing, analysis and explanation steps without the
two approval pauses. It says so everywhere: each study's audit trail records that QC approval and
sign-off were *not given*, and each report stays a draft. The same tools, executor (allow-list,
audit of every call) and report composition as the interactive graph are used.

Distribution is Dask's (``dask.distributed``): a LocalCluster of single-threaded worker processes
by default, or an existing scheduler (``tcp://host:8786``), checked before any study runs: its
workers must run this cardiomics version and see the studies and the output folder at the same
paths (and each study checks its own worker again, for workers that join later). A study is one task;
a study that fails is recorded and the batch goes on; a cluster left with no worker fails the studies
still waiting rather than waiting forever. Outputs are
written atomically with a manifest of hashes last, so a batch killed midway is resumed by running
it again: studies whose outputs verify, analysed by this cardiomics version from the input as it is now
(a fingerprint of the study's file names, sizes and times), are skipped.

Per-study height, weight and sex come from an optional covariates CSV (``study`` plus any of
``height_cm``, ``weight_kg``, ``sex``), validated whole before any study runs. They reach
``cardiac_function`` (BSA-indexed values, sex-specific reference ranges) and the study's row; the
manifest records their digest, so when a CSV is given, a study finished with other covariates is
analysed again (a rerun without one resumes and keeps what finished studies were analysed with).

Layout of ``OUT``::

    phenotypes.parquet            one row per study of the studies folder that is done
    batch_summary.json            status (running, finished, interrupted), counts, throughput, failures of the last invocation
    .batch.lock                   held by the batch writing here (one at a time)
    studies/<name>/phenotypes.json, report_draft.json, report_draft.html, audit/<run_id>.jsonl, manifest.json
    studies/<name>/.study.lock    held by the task analysing that study
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, Field

from cardiomics import __version__
from cardiomics.atomicfile import write_atomic
from cardiomics.errors import InputError
from cardiomics.filelock import try_exclusive

log = structlog.get_logger(__name__)

MANIFEST = "manifest.json"
PHENOTYPES = "phenotypes.json"
REPORT_JSON = "report_draft.json"
REPORT_HTML = "report_draft.html"
TABLE = "phenotypes.parquet"
SUMMARY = "batch_summary.json"
LOCK = ".batch.lock"
APPROVALS_NOTE = "not given: batch mode runs without the QC approval and sign-off checkpoints; reports stay drafts"
_NIFTI = (".nii", ".nii.gz")
COVARIATES = ("height_cm", "weight_kg", "sex")


@dataclass(frozen=True)
class Study:
    name: str
    path: Path


class StudyOutcome(BaseModel):
    study: str
    status: Literal["done", "failed", "skipped"]
    run_id: str | None = None
    seconds: float = 0.0
    worker: str = ""
    error: dict[str, Any] | None = Field(None, description="Typed error (error, code, message, hint) of a failed study.")


class BatchSummary(BaseModel):
    status: Literal["running", "finished", "interrupted"] = Field(
        "finished", description="running while the batch runs (or if it was killed); interrupted after Ctrl-C")
    studies_dir: str
    out_dir: str
    engine: str
    workers: int | None
    started_at: str
    wall_s: float
    n_studies: int
    done: int
    skipped: int
    failed: int
    analysed_again: dict[str, int] = Field(default_factory=dict, description="Studies with earlier outputs analysed again, by reason "
                                           "(input changed, another cardiomics version, other covariates, outputs altered…).")
    studies_per_min: float | None = Field(description="Studies analysed (done or failed; not skipped) per minute of wall time.")
    done_per_min: float | None = Field(None, description="Studies analysed successfully per minute of wall time: a batch "
                                       "whose studies fail fast has a high studies_per_min and a low done_per_min.")
    approvals: str = APPROVALS_NOTE
    table: str | None
    failures: list[StudyOutcome]
    covariates: str | None = Field(None, description="The covariates CSV of this invocation, if any.")


# ---------------------------------------------------------------------------------------------
# discovery and verification


def _is_nifti(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(_NIFTI)


def _nifti_stem(p: Path) -> str:
    ext = max((e for e in _NIFTI if p.name.lower().endswith(e)), key=len)  # .nii.gz before .nii
    return p.name[: -len(ext)]


def _folder_study(folder: Path) -> Path:
    """A folder holding one NIfTI volume (and nothing else of note) is that volume; otherwise the folder is the study.

    A NIfTI beside DICOM files is not taken for the study: the folder is, and the loader refuses it
    as ambiguous (the NIfTI may be a mask or a conversion), so the batch reports that study."""
    from cardiomics.tools.imaging._io import looks_like_dicom

    try:
        entries = list(folder.iterdir())
    except OSError:  # unreadable: the study is still tried, and fails with the loader's own error
        return folder
    niftis = [q for q in entries if _is_nifti(q)]
    if len(niftis) != 1 or any(q.is_dir() for q in entries):
        return folder
    others = [q for q in entries if q != niftis[0] and not q.name.startswith(".")]
    return folder if any(looks_like_dicom(q) for q in others) else niftis[0]


def discover(studies_dir: str | Path, *, exclude: str | Path | None = None) -> list[Study]:
    """Each visible subfolder is a study (a DICOM series, or NIfTI frames); so is a NIfTI file at the top.
    Paths are absolute: the workers of a given cluster do not share this process's working directory.

    ``exclude`` (the output folder) is never a study, so ``--out`` may live inside the studies folder.
    Two entries that would share a study name (``a/`` and ``a.nii.gz``) are refused: their outputs would
    overwrite each other."""
    root = Path(studies_dir).resolve()
    if not root.is_dir():
        raise InputError("not-found", f"{root} is not a folder", hint="pass a folder whose subfolders are studies")
    skip = Path(exclude).resolve() if exclude is not None else None
    studies: list[Study] = []
    seen: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.name.startswith((".", "_")) or (skip is not None and p.resolve() == skip):
            continue
        if p.is_dir():
            study = Study(p.name, _folder_study(p))
        elif _is_nifti(p):
            study = Study(_nifti_stem(p), p)
        else:
            continue
        if study.name in seen:
            raise InputError("duplicate-study-names", f"{seen[study.name].name} and {p.name} in {root} would both be study {study.name!r}",
                             hint="rename or move one of them: each study's outputs are kept under its name")
        seen[study.name] = p
        studies.append(study)
    if not studies:
        raise InputError("no-studies", f"no study folders or NIfTI files in {root}",
                         hint="each subfolder should hold one DICOM cine series (or NIfTI)")
    return studies


def input_fingerprint(path: str | Path) -> str:
    """What a study's input is on disk: each file's name (relative to the study), size and modification
    time. Metadata only, so checking a cohort on resume reads no image; a study re-exported, edited, or
    with files added or removed since it was analysed no longer matches. A copy that does not keep
    modification times (``cp -r`` rather than ``cp -a`` or ``rsync -a``) matches none."""
    from cardiomics.hashing import sha256_json

    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    entries = []
    for f in files:
        st = f.stat()
        entries.append([f.relative_to(p).as_posix() if f != p else p.name, st.st_size, st.st_mtime_ns])
    return sha256_json(entries)


def salt_id(salt: bytes) -> str:
    """A short public name of a study-key salt (a hash: it reveals nothing of the salt), so outputs keyed
    with another salt are recognised."""
    from cardiomics.hashing import sha256_bytes

    return sha256_bytes(b"cardiomics-salt-id|" + salt)[:16]


def _sha256(path: Path) -> str:
    from cardiomics.hashing import sha256_file

    return sha256_file(path)


def read_manifest(study_out: Path) -> dict[str, Any] | str:
    """A study's manifest, or why there is none to read ("not analysed", "manifest unreadable")."""
    try:
        return json.loads((study_out / MANIFEST).read_text())
    except FileNotFoundError:
        return "not analysed"
    except (OSError, ValueError):
        return "manifest unreadable"


def study_status(study_out: Path, covariates_digest: str | None = None, source: str | Path | None = None, *,
                 manifest: dict[str, Any] | str | None = None) -> str | None:
    """None when the study is done, else why it must be analysed (again).

    Done means: the manifest exists, was written by this cardiomics version, every file it lists has its
    recorded hash and the audit chain verifies. With ``source``, the study's input must also be what it
    was when analysed (``input_fingerprint``); with ``covariates_digest``, the study must have been
    analysed with those covariates (a manifest from before covariates were recorded counts as analysed with none).
    ``manifest``: what ``read_manifest`` returned, when the caller has read it already."""
    from cardiomics.audit import verify_file

    if manifest is None:
        manifest = read_manifest(study_out)
    if isinstance(manifest, str):
        return manifest
    try:
        if manifest.get("cardiomics_version") != __version__:
            return f"analysed by cardiomics {manifest.get('cardiomics_version', 'of unknown version')}"
        if covariates_digest is not None and manifest.get("covariates_sha256", covariates_sha256(None)) != covariates_digest:
            return "analysed with other covariates"
        if source is not None and manifest.get("input_fingerprint") != input_fingerprint(source):
            return "input changed since it was analysed"
        for rel, digest in manifest["files"].items():
            if _sha256(study_out / rel) != digest:
                return "outputs altered"
        return None if verify_file(study_out / manifest["audit"]).ok else "audit trail does not verify"
    except Exception:  # noqa: BLE001 - missing, unreadable or malformed outputs do not verify
        return "outputs incomplete"


def verify_study(study_out: Path, covariates_digest: str | None = None, source: str | Path | None = None) -> bool:
    """True when the study's outputs are complete and current (see ``study_status``)."""
    return study_status(study_out, covariates_digest, source) is None


# ---------------------------------------------------------------------------------------------
# covariates (height, weight, sex per study)

Covariates = dict[str, float | str]
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def covariates_sha256(covariates: Mapping[str, Any] | None) -> str:
    """Digest of the covariates a study is analysed with; none at all is the digest of ``{}``."""
    from cardiomics.hashing import sha256_json

    return sha256_json(dict(covariates or {}))


def _covariate_rules() -> tuple[dict[str, tuple[float, float]], tuple[str, ...]]:
    """Open bounds of height and weight, and the sex values, of cardiac_function's input model:
    the CSV is refused up front exactly where the tool would refuse the study later."""
    from typing import get_args

    from cardiomics.tools.imaging._function import CardiacFunctionInput

    fields = CardiacFunctionInput.model_fields
    bounds = {}
    for name in ("height_cm", "weight_kg"):
        meta = fields[name].metadata
        lo = next(m.gt for m in meta if getattr(m, "gt", None) is not None)
        hi = next(m.lt for m in meta if getattr(m, "lt", None) is not None)
        bounds[name] = (float(lo), float(hi))
    sexes = tuple(v for arg in get_args(fields["sex"].annotation) for v in get_args(arg))
    return bounds, sexes


def _number(raw: str, column: str, bounds: tuple[float, float], where: str) -> float:
    if not _NUMBER.fullmatch(raw):
        raise InputError("covariates-not-a-number", f"{where}: {column} {raw!r} is not a number",
                         hint=f"write {column} as a plain number (e.g. 172.5), or leave the cell blank when unknown")
    value, (lo, hi) = float(raw), bounds
    if not (math.isfinite(value) and lo < value < hi):
        raise InputError("covariates-out-of-range", f"{where}: {column} {raw!r} is out of range (must be above {lo:g} and below {hi:g})",
                         hint="height in centimetres, weight in kilograms; leave the cell blank when unknown")
    return value


def _read_csv(src: Path) -> list[tuple[int, list[str]]]:
    """Rows with the file line they end on (a spreadsheet's row number); blank rows dropped."""
    try:
        with src.open(newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets often write a BOM
            reader = csv.reader(fh)
            return [(reader.line_num, [c.strip() for c in cells]) for cells in reader if any(c.strip() for c in cells)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError("covariates-unreadable", f"cannot read covariates file {src}: {exc}",
                         hint="pass a UTF-8 CSV file with a header row: study,height_cm,weight_kg,sex") from exc


def _check_header(src: Path, header: list[str]) -> None:
    if "study" not in header:
        raise InputError("covariates-no-study-column", f"{src}: the header row has no 'study' column (found {', '.join(map(repr, header))})",
                         hint="the first row names the columns: study, and any of height_cm, weight_kg, sex")
    unknown = [h for h in header if h not in ("study", *COVARIATES)]
    if unknown:
        raise InputError("covariates-unknown-column", f"{src}: unknown column(s) {', '.join(map(repr, unknown))}",
                         hint="allowed columns: study, height_cm, weight_kg, sex (spelled exactly so)")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise InputError("covariates-duplicate-column", f"{src}: column(s) {', '.join(map(repr, repeated))} appear more than once",
                         hint="keep one column of each name")


def _row_covariates(cells: dict[str, str], where: str, bounds: dict[str, tuple[float, float]], sexes: tuple[str, ...]) -> Covariates:
    """One row's known values, normalised; blank cells (unknown) are left out."""
    cov: Covariates = {}
    for column in ("height_cm", "weight_kg"):
        if cells.get(column):
            cov[column] = _number(cells[column], column, bounds[column], where)
    raw_sex = cells.get("sex", "")
    if raw_sex:
        if raw_sex.lower() not in sexes:
            raise InputError("covariates-bad-sex", f"{where}: sex {raw_sex!r} is not one of {', '.join(sexes)}",
                             hint=f"write {' or '.join(sexes)} (any case), or leave the cell blank when unknown")
        cov["sex"] = raw_sex.lower()
    return cov


def load_covariates(path: str | Path, study_names: Iterable[str]) -> dict[str, Covariates]:
    """Per-study covariates from a CSV, validated whole: any bad cell, duplicate or unknown study refuses the file."""
    src = Path(path)
    rows = _read_csv(src)
    if not rows:
        raise InputError("covariates-empty", f"{src} is empty", hint="the first row names the columns: study,height_cm,weight_kg,sex")
    header = rows[0][1]
    _check_header(src, header)
    bounds, sexes = _covariate_rules()
    found: dict[str, Covariates] = {}
    first_row: dict[str, int] = {}
    for line, values in rows[1:]:
        if any(values[len(header):]):
            raise InputError("covariates-bad-row", f"{src}, row {line}: more cells ({len(values)}) than columns ({len(header)})",
                             hint="check for a stray comma or an unquoted value")
        cells = dict(zip(header, values, strict=False))
        study = cells.get("study", "")
        if not study:
            raise InputError("covariates-empty-study", f"{src}, row {line}: the study cell is blank",
                             hint="name the study (its folder name) on every row, or delete the row")
        if study in found:
            raise InputError("covariates-duplicate-study", f"{src}, row {line}: study {study!r} already has a row (row {first_row[study]})",
                             hint="keep one row per study")
        found[study] = _row_covariates(cells, f"{src}, row {line}, study {study!r}", bounds, sexes)
        first_row[study] = line
    unmatched = sorted(set(found) - set(study_names))
    if unmatched:
        shown = ", ".join(map(repr, unmatched[:10])) + (f" and {len(unmatched) - 10} more" if len(unmatched) > 10 else "")
        raise InputError("covariates-unknown-study", f"{src}: {len(unmatched)} study name(s) match no study in the folder: {shown}",
                         hint="the study column holds the discovered names: subfolder names, or NIfTI file names without .nii/.nii.gz")
    return found


def not_indexable(covariates: Mapping[str, Covariates]) -> list[str]:
    """Studies given only one of height and weight: body-surface area needs both, so they are not indexed."""
    return sorted(name for name, c in covariates.items() if ("height_cm" in c) != ("weight_kg" in c))


# ---------------------------------------------------------------------------------------------
# one study (runs inside a worker process)


def _flatten(prefix: str, est: Any, row: dict[str, Any]) -> None:
    """An Estimate (dict) as value, interval and flag columns."""
    if not isinstance(est, dict) or "value" not in est:
        return
    row[prefix] = est["value"]
    iv = est.get("interval") or {}
    row[f"{prefix}_lower"] = iv.get("lower")
    row[f"{prefix}_upper"] = iv.get("upper")
    row[f"{prefix}_flag"] = est.get("flag")


def phenotype_row(study: str, run_id: str, results: dict[str, Any], covariates: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The flat row of one study: the covariates it was indexed with, global function, AHA segment thickness and QC verdicts."""
    load, func = results["load_study"], results["cardiac_function"]
    row: dict[str, Any] = {"study": study, "run_id": run_id, "study_key": load["study_key"], "n_frames": load["n_frames"],
                           "n_slices": load["n_slices"], "ed_frame": func["ed_frame"], "es_frame": func["es_frame"],
                           "rv_ed_frame": func.get("rv_ed_frame"), "rv_es_frame": func.get("rv_es_frame")}
    row.update({c: (covariates or {}).get(c) for c in COVARIATES})  # every row has the columns; None is unknown
    row["bsa_m2"] = func.get("bsa_m2")
    for key, value in func.items():
        _flatten(key, value, row)
    reg = results.get("regional_function")
    if reg:
        for seg in reg["segments"]:
            for field in ("ed_wall_thickness_mm", "ed_max_wall_thickness_mm", "es_wall_thickness_mm", "systolic_thickening_pct"):
                est = seg.get(field)
                row[f"aha{seg['segment']:02d}_{field}"] = est["value"] if est else None
        peak = reg.get("max_ed_wall_thickness_mm")
        row["max_ed_wall_thickness_mm"] = peak["value"] if peak else None
        row["max_ed_wall_thickness_segment"] = reg.get("max_ed_wall_thickness_segment")
    for stage in ("load_study", "segment", "cardiac_function", "regional_function"):
        if stage in results:
            row[f"qc_{stage}"] = results[stage]["qc_verdict"]
    model = (results["segment"]["provenance"].get("models") or [{}])[0]
    row["segmenter"] = f"{model.get('id', '')}@{model.get('version', '')}"
    row["report_status"] = "draft"
    row["approvals"] = "not-given"
    return row


_WORKER_READY = False
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40, "critical": 50}


def _drop_below_warning(_logger, method: str, event_dict: dict) -> dict:
    if _LEVELS.get(method, 20) < 30:
        raise structlog.DropEvent
    return event_dict


def _quiet_structlog() -> None:
    """Warnings and errors to stderr. Filtering is a processor, not a filtering wrapper class: the audit
    trail builds its own logger from the global wrapper class, and a level filter there would drop its lines."""
    import sys

    structlog.configure(
        processors=[_drop_below_warning, structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="%H:%M:%S"),
                    structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.BoundLogger, logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False)


def _threads_here(by_worker: Mapping[str, int]) -> int | None:
    """This worker's torch threads from the client's plan; a worker that joined later takes its own
    machine's cores over its task threads (it cannot know about other workers on that machine)."""
    try:
        from dask.system import CPU_COUNT
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not running in a Dask worker
        return None
    return by_worker.get(worker.address) or max(1, CPU_COUNT // max(1, worker.state.nthreads))


def _prepare_worker(n: int | Mapping[str, int] | None) -> None:
    """Once per worker process: warnings-only logs on stderr, and torch intra-op threads so that
    workers x threads does not exceed the cores (oversubscription slows every worker down)."""
    global _WORKER_READY
    if _WORKER_READY:
        return
    if not structlog.is_configured():
        _quiet_structlog()
    if isinstance(n, Mapping):
        n = _threads_here(n)
    if n:
        import torch

        torch.set_num_threads(int(n))
    _WORKER_READY = True


_VERSION_HINT = "install the same cardiomics version in every worker's Python environment, then restart the workers"
_FILES_HINT = "put the studies and --out on a file system every worker mounts at the same path as this machine"


def _unfit_worker(client_version: str | None, out_dir: str, study: str) -> dict[str, str] | None:
    """Why this worker must not analyse a study, checked in the task itself because a worker that joins a
    given cluster after the checks in ``_connect`` was never probed: another cardiomics version would
    mix its numbers into the table, a worker blind to ``out_dir`` would write the outputs to its own disk,
    and one blind to the study would leave a failed study folder behind a misleading loader error."""
    if client_version is not None and client_version != __version__:
        return {"error": "InputError", "code": "worker-version-mismatch",
                "message": f"this worker runs cardiomics {__version__}, the batch was started with {client_version}",
                "hint": f"{_VERSION_HINT} and rerun the batch"}
    if not Path(out_dir).is_dir():
        return {"error": "InputError", "code": "workers-cannot-see-files", "message": f"this worker cannot see the output folder {out_dir}",
                "hint": f"{_FILES_HINT}, then rerun the batch"}
    if not Path(study).exists():
        # the client found it when the batch started: removed since, or not on this worker's file system
        return {"error": "InputError", "code": "not-found",
                "message": f"this worker cannot see the study {study}, which was there when the batch started",
                "hint": f"if it was not removed since, {_FILES_HINT}; then rerun the batch"}
    return None


def analyse_study(name: str, path: str, out_dir: str, salt: bytes, *, torch_threads: int | Mapping[str, int] | None = None,
                  keep_artifacts: bool = False, covariates: Covariates | None = None, client_version: str | None = None) -> dict[str, Any]:
    """Analyse one study (with its height, weight and sex when known) and write its outputs;
    returns a StudyOutcome as a dict. Never raises for a bad study.

    ``client_version``: the cardiomics version that started the batch; a worker running another one
    (or not seeing ``out_dir`` or the study) fails the study without touching its folder; so does a
    task that finds another still analysing the same study (``study-in-progress``)."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    unfit = _unfit_worker(client_version, out_dir, path)
    if unfit is not None:
        return StudyOutcome(study=name, status="failed", worker=worker, error=unfit).model_dump()
    study_out = Path(out_dir) / "studies" / name
    (study_out / "audit").mkdir(parents=True, exist_ok=True)
    # a worker keeps running its study after the batch that sent it was stopped (Dask cannot interrupt a
    # task): a rerun's task for the same study must not write the same files at once
    with try_exclusive(study_out / ".study.lock") as held:
        if not held:
            return StudyOutcome(study=name, status="failed", worker=worker, error={
                "error": "InputError", "code": "study-in-progress",
                "message": f"another task is still analysing {name} (a worker of an interrupted batch finishing it?)",
                "hint": "rerun the batch once that task has finished: the study is then skipped, or analysed again"}).model_dump()
        return _analyse_held(name, path, study_out, salt, worker, torch_threads=torch_threads,
                             keep_artifacts=keep_artifacts, covariates=covariates)


def _analyse_held(name: str, path: str, study_out: Path, salt: bytes, worker: str, *,
                  torch_threads: int | Mapping[str, int] | None, keep_artifacts: bool,
                  covariates: Covariates | None) -> dict[str, Any]:
    """``analyse_study`` once this task holds the study's lock."""
    from cardiomics.audit import AuditTrail
    from cardiomics.errors import CardiomicsError
    from cardiomics.tools import ArtifactStore, ToolContext

    _prepare_worker(torch_threads)
    started = time.perf_counter()
    (study_out / MANIFEST).unlink(missing_ok=True)  # outputs are rewritten: not verified until the new manifest
    run_id = f"batch-{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.urandom(3).hex()}"
    audit = AuditTrail(study_out / "audit", run_id)
    work = Path(tempfile.mkdtemp(prefix=f"cardiomics-batch-{name[:40]}-")) if not keep_artifacts else study_out / "artifacts"
    try:
        # before reading it: a study changed while it is analysed does not match its manifest afterwards
        fingerprint = input_fingerprint(path)
        store = ArtifactStore(work)
        salt_path = store.root / ".salt"
        if not salt_path.exists():  # one salt for the cohort: study keys are stable across workers and reruns
            write_atomic(salt_path, salt, mode=0o600)
        audit.append("run_start", "system", mode="batch", cardiomics_version=__version__, llm="none (deterministic planner)",
                     approvals=APPROVALS_NOTE, once_key="start")
        results = _protocol(run_id, path, ToolContext(store=store, seed=0), audit, study_out, patient=covariates)
        row = phenotype_row(name, run_id, results, covariates)
        write_atomic(study_out / PHENOTYPES, json.dumps(row, indent=1, sort_keys=True))
        audit.append("run_finished", "system", status="draft", approvals="not-given", once_key="finished")
        files = {rel: _sha256(study_out / rel) for rel in (PHENOTYPES, REPORT_JSON, REPORT_HTML)}
        manifest = {"study": name, "run_id": run_id, "audit": f"audit/{run_id}.jsonl", "files": files,
                    "covariates_sha256": covariates_sha256(covariates), "cardiomics_version": __version__,
                    "source": str(path), "input_fingerprint": fingerprint, "salt_id": salt_id(salt),
                    "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "approvals": APPROVALS_NOTE,
                    "worker": worker}  # host:pid, so a cluster's odd results can be traced to the machine that made them
        write_atomic(study_out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))  # last: marks the study done
        return StudyOutcome(study=name, status="done", run_id=run_id, seconds=round(time.perf_counter() - started, 3),
                            worker=worker).model_dump()
    except CardiomicsError as exc:
        error = exc.to_dict()
    except Exception as exc:
        log.exception("batch study failed", study=name)
        error = {"error": type(exc).__name__, "code": "unexpected", "message": str(exc)[:500], "hint": "see the worker log"}
    finally:
        if not keep_artifacts:
            shutil.rmtree(work, ignore_errors=True)
        else:  # the kept artefacts sit in OUT beside the study keys: the salt that makes the keys must not
            (work / ".salt").unlink(missing_ok=True)
    audit.append("run_failed", "system", code=error["code"], error=error["error"], once_key="failed")
    return StudyOutcome(study=name, status="failed", run_id=run_id, seconds=round(time.perf_counter() - started, 3),
                        worker=worker, error=error).model_dump()


def _protocol(run_id: str, path: str, ctx, audit, study_out: Path, patient: Covariates | None = None) -> dict[str, Any]:
    """The deterministic planner's steps with the approval checkpoints recorded as not given."""
    from cardiomics.agents.compose import compose
    from cardiomics.agents.executor import ToolExecutor
    from cardiomics.agents.grounding import check, numeric_values
    from cardiomics.agents.protocol import DeterministicPlanner
    from cardiomics.tools.report import render_html

    planner = DeterministicPlanner()
    state: dict[str, Any] = {"run_id": run_id, "study_path": str(Path(path).resolve()), "omics_path": None, "patient": dict(patient or {}),
                             "results": {}, "status": "processing"}

    def step(role: str, fn) -> None:
        outputs = fn(ToolExecutor(ctx, audit, role), state)
        state["results"].update({k: v.model_dump(mode="json") for k, v in outputs.items()})

    step("processing", planner.processing)
    if "regional_function" not in state["results"]:
        seg_id = state["results"]["segment"]["segmentation_id"]
        reg = ToolExecutor(ctx, audit, "processing").call("processing", "regional_function", {"segmentation_id": seg_id})
        state["results"]["regional_function"] = reg.model_dump(mode="json")
    audit.append("approval_not_given", "system", checkpoint="qc", reason="batch mode", once_key="no-approval:qc")
    step("analysis", planner.analysis)
    step("explanation", planner.explanation)

    report = compose(state, 1)
    values = [v for k, r in state["results"].items() if k != "report_figures" for v in numeric_values(r)]
    retrieved = [h["id"] for r in state["results"].values() if isinstance(r, dict) for h in r.get("passages", [])]
    ex = ToolExecutor(ctx, audit, "explanation:v1")
    problems: list[str] = []
    draft = report.narrative
    for attempt in (1, 2):
        draft = planner.narrative(ex, state, draft, problems)
        problems = check(draft, values, retrieved)
        audit.append("grounding_check", "explanation", version=1, attempt=attempt, problems=problems, once_key=f"grounding:v1:{attempt}")
        if not problems:
            break
    report.narrative, report.grounding_flags = draft, problems
    report.limitations = [*report.limitations, "Batch mode: this draft was neither QC-approved nor signed off by a reviewer."]
    write_atomic(study_out / REPORT_JSON, report.model_dump_json(indent=1))
    write_atomic(study_out / REPORT_HTML, render_html(report))
    audit.append("report_version", "explanation", version=1, status=report.status, report_sha256=report.content_sha256(),
                 grounding_flags=len(report.grounding_flags), once_key="report:v1")
    audit.append("approval_not_given", "system", checkpoint="signoff", reason="batch mode", once_key="no-approval:signoff")
    return state["results"]


# ---------------------------------------------------------------------------------------------
# the cohort


def write_table(out_dir: str | Path, studies: Iterable[str]) -> Path | None:
    """The phenotype rows of ``studies`` (done: verified on this run, or just written) as one Parquet table,
    written atomically. Only the cohort's studies: a folder under ``OUT/studies`` whose study has left the
    studies folder keeps its files but not its row. With no row, an earlier table is removed (it would
    describe another cohort)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    rows = [json.loads((out / "studies" / name / PHENOTYPES).read_text()) for name in sorted(studies)]
    if not rows:
        (out / TABLE).unlink(missing_ok=True)
        return None
    frame = pd.DataFrame(rows)
    first = [c for c in ("study", "run_id", "study_key") if c in frame.columns]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    path = out / TABLE
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_atomic(path, buf.getvalue())
    return path


def _deployment_salt() -> bytes:
    from cardiomics.config import Settings
    from cardiomics.tools import ArtifactStore

    return ArtifactStore(Settings.from_env().ensure().artifacts_dir).salt


def _warm_shared_stores() -> None:
    """Build the on-disk knowledge index once, here, before the workers start: several worker
    processes building the same chromadb folder at once would race. Workers then only read it
    (or all use the chromadb server named by CARDIOMICS_CHROMA_URL, where supported)."""
    from cardiomics.tools import registry

    if "knowledge_search" in registry():
        from cardiomics.tools.knowledge._index import open_index

        open_index()


SCHEDULER_TIMEOUT_S = 30.0  # connecting to the scheduler named by --address
WORKERS_TIMEOUT_S = 120.0  # that scheduler having at least one worker
_ADDRESS_HINT = "pass the address `dask scheduler` prints, e.g. tcp://10.0.0.5:8786, and start workers with `dask worker tcp://10.0.0.5:8786`"


def check_address(address: str) -> None:
    """Refuse what is not a Dask scheduler address before any work (Dask's own error comes late and raw)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    if address.startswith("ray://"):
        raise InputError("ray-not-installed", "Ray addresses are not supported by this installation",
                         hint="run a Dask scheduler (`dask scheduler`, `dask worker tcp://…`) and pass its tcp:// address")
    try:
        scheme, location = parse_address(address, strict=True)
        if scheme not in ("tcp", "tls"):
            raise ValueError(f"the scheme is {scheme}://, not tcp:// or tls://")
        parse_host_port(location)
    except ValueError as exc:
        raise InputError("bad-address", f"--address {address!r} is not a Dask scheduler address: {exc}", hint=_ADDRESS_HINT) from None


def _probe_worker(samples: list[str], probe: str, token: str, dask_worker) -> dict[str, Any]:
    """Runs on each worker of a given scheduler: its cardiomics version, whether it sees the studies
    (a few of them: an empty folder at the same path is not enough) and the
    output folder at the paths the client uses (a file the client just wrote, with its content), and its
    machine, cores and task threads."""
    from dask.system import CPU_COUNT

    try:
        sees_out = Path(probe).read_text(encoding="utf-8") == token
    except OSError:
        sees_out = False
    return {"version": __version__, "sees_studies": all(Path(p).exists() for p in samples), "sees_out": sees_out,
            "host": socket.gethostname(), "cores": CPU_COUNT, "nthreads": dask_worker.state.nthreads}


def torch_threads_per_worker(report: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Torch threads of each worker: its machine's cores shared among the task threads of every worker
    on that machine (four 1-thread workers on 16 cores get 4 each, not 16 each)."""
    from collections import Counter

    tasks_on = Counter()
    for r in report.values():
        tasks_on[r["host"]] += max(1, int(r["nthreads"]))
    return {w: max(1, int(r["cores"]) // tasks_on[r["host"]]) for w, r in report.items()}


def check_workers(report: Mapping[str, Mapping[str, Any]], studies_dir: Path, out: Path) -> None:
    """Refuse a cluster whose workers cannot do the work: another cardiomics version, or not seeing the
    studies or the output folder (workers read and write them by path, so every worker must mount them alike)."""
    def named(workers: list[str]) -> str:
        return f"{len(workers)} of {len(report)} workers ({', '.join(workers[:3])}{' …' if len(workers) > 3 else ''})"

    other = sorted(w for w, r in report.items() if r.get("version") != __version__)
    if other:
        versions = sorted({str(report[w].get("version")) for w in other})
        raise InputError("worker-version-mismatch", f"{named(other)} run cardiomics {', '.join(versions)}, this client {__version__}",
                         hint=_VERSION_HINT)
    for key, what, folder in (("sees_studies", "the studies in", studies_dir), ("sees_out", "the output folder", out)):
        blind = sorted(w for w, r in report.items() if not r.get(key))
        if blind:
            raise InputError("workers-cannot-see-files", f"{named(blind)} cannot see {what} {folder}",
                             hint=_FILES_HINT)


def _connect(address: str, studies_dir: Path, out: Path, samples: list[str]):
    """A client of the scheduler at ``address`` once it has a worker and every worker can do the work
    (``samples``: studies each worker must see), with each worker's torch threads."""
    from dask.distributed import Client

    try:
        client = Client(address, timeout=SCHEDULER_TIMEOUT_S)
    except OSError as exc:  # refused, unresolvable or timed out (TimeoutError is an OSError)
        raise InputError("scheduler-unreachable", f"no Dask scheduler answered at {address} within {SCHEDULER_TIMEOUT_S:g} s ({exc})",
                         hint=f"check the host, port and firewall; {_ADDRESS_HINT}") from None
    probe = out / f".worker-probe-{os.urandom(6).hex()}"
    try:
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError:
            raise InputError("no-workers", f"the Dask scheduler at {address} has had no worker for {WORKERS_TIMEOUT_S:g} s",
                             hint="start workers with `dask worker " + address + "` on machines that see the studies and --out") from None
        token = os.urandom(16).hex()
        probe.write_text(token, encoding="utf-8")
        try:
            report = client.run(_probe_worker, samples, str(probe), token)
        except Exception as exc:  # noqa: BLE001 - e.g. a worker without cardiomics cannot unpickle the probe
            # Dask re-raises a worker's import error as a bare Exception whose text already names the real one
            reason = str(exc) if type(exc) is Exception else f"{type(exc).__name__}: {exc}"
            raise InputError("workers-cannot-run-cardiomics", f"a worker of {address} could not run cardiomics: {reason[:300]}",
                             hint="install cardiomics (the same version as here) in every worker's Python environment") from None
        check_workers(report, studies_dir, out)
    except BaseException:
        client.close()
        raise
    finally:
        probe.unlink(missing_ok=True)
    threads = torch_threads_per_worker(report)
    log.info("dask scheduler ready", address=address, workers=len(report), torch_threads=threads)
    return client, threads


def _client(workers: int, address: str | None, studies_dir: Path, out: Path, samples: list[str]):
    """A Dask client, its LocalCluster (None for a given scheduler) and the studies' torch threads:
    a given scheduler at ``address`` (tcp://…), checked, or a new LocalCluster of single-threaded processes."""
    import logging

    from dask.distributed import Client, LocalCluster

    if address:
        client, threads = _connect(address, studies_dir, out, samples)
        return client, None, threads
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                           silence_logs=logging.ERROR)
    # workers x threads = the cores: oversubscribed torch threads slow every worker down
    return Client(cluster), cluster, max(1, (os.cpu_count() or 1) // workers)


Event = Callable[[StudyOutcome, int, int], None]


def task_error(exc: BaseException) -> dict[str, str]:
    """The typed error of a study whose task raised instead of returning its outcome (``analyse_study``
    never raises for a bad study, so the worker itself is at fault)."""
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        return {"error": "KilledWorker", "code": "worker-lost", "message": str(exc)[:500],
                "hint": "the worker process died (memory?); rerun the batch to retry this study"}
    return {"error": type(exc).__name__, "code": "worker-failed", "message": str(exc)[:500],
            "hint": "see the worker's log; rerun the batch to retry this study"}


def _collect(client, futures: Mapping[Any, Study], record: Callable[[StudyOutcome], None], *, where: str) -> None:
    """``record`` each study's outcome as it finishes. Dask waits forever for a worker once a cluster has
    none left (they died, or left because they could not load cardiomics); after ``WORKERS_TIMEOUT_S``
    without one, the studies still waiting fail with ``no-workers`` and the batch ends with its summary."""
    from distributed import as_completed

    # as_completed hands over each finished future once (waiting on every pending one per pass would be
    # quadratic in the cohort size); the non-blocking form leaves room for the worker check
    pending, left = as_completed(futures), set(futures)
    quiet_since, no_worker_since = time.monotonic(), None
    while not pending.is_empty():
        done = pending.next_batch(block=False)
        for fut in done:
            try:
                outcome = StudyOutcome.model_validate(fut.result())
            except Exception as exc:  # noqa: BLE001 - a worker that died or could not run the task fails this study only
                outcome = StudyOutcome(study=futures[fut].name, status="failed", error=task_error(exc))
            fut.release()
            left.discard(fut)
            record(outcome)
        now = time.monotonic()
        if done:
            quiet_since = now
        elif now - quiet_since >= min(5.0, WORKERS_TIMEOUT_S):  # nothing finished for a while: is anyone still working?
            quiet_since = now
            if client.nthreads():
                no_worker_since = None
            elif no_worker_since is None:
                no_worker_since = now
            elif now - no_worker_since >= WORKERS_TIMEOUT_S:
                error = {"error": "InputError", "code": "no-workers", "message": f"{where} had no worker for {WORKERS_TIMEOUT_S:g} s; "
                         f"{len(left)} studies were not analysed",
                         "hint": "workers leave when they die or cannot load cardiomics (their logs say which); "
                                 "start workers that pass the checks and rerun the batch: finished studies are skipped"}
                client.cancel(list(left))
                for fut in sorted(left, key=lambda f: futures[f].name):
                    record(StudyOutcome(study=futures[fut].name, status="failed", error=error))
                return
        else:
            time.sleep(0.2)


@contextmanager
def _only_batch(out: Path):
    """Hold ``OUT/.batch.lock`` while a batch writes to ``out``: two batches on one folder would analyse
    the same studies at once and overwrite each other's outputs."""
    import fcntl

    with open(out / LOCK, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise InputError("batch-already-running", f"another cardiomics batch ({holder}) is writing to {out}",
                             hint="wait for it to finish (or stop it), then run this one: it skips what the other finished") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {datetime.now(UTC).isoformat(timespec='seconds')}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check_salt(out: Path, name: str, manifest: dict[str, Any] | str, mine: str) -> None:
    """Refuse to add studies keyed with this salt (``salt_id`` ``mine``) to outputs keyed with another: the
    table's study keys would not be comparable. The salt is the deployment's (``CARDIOMICS_HOME``)."""
    theirs = manifest.get("salt_id") if isinstance(manifest, dict) else None
    if theirs not in (None, mine):
        raise InputError("other-salt", f"study {name} in {out} was keyed with another study-key salt than this deployment's",
                         hint="run the batch with the CARDIOMICS_HOME of the earlier run (the default is ./.cardiomics, "
                              "so run it from the same folder), or write to a new --out")


def run_batch(studies_dir: str | Path, out_dir: str | Path, *, workers: int = 1, address: str | None = None,
              on_result: Event | None = None, keep_artifacts: bool = False, covariates: str | Path | None = None,
              on_plan: Callable[[list[Study], dict[str, Covariates]], None] | None = None) -> BatchSummary:
    """Analyse every study not already done (with the same input, cardiomics version and, when a CSV is
    given, covariates); collect failures; write the Parquet table and the summary.

    ``covariates`` is a CSV of per-study height_cm, weight_kg and sex (see ``load_covariates``); it is
    validated before anything is written or started. ``on_plan`` is called once the studies are found
    and the covariates validated, before anything is written. The summary says ``running`` while the
    batch runs; interrupted (Ctrl-C), it says ``interrupted`` with what finished, the table holds the
    studies done so far, and ``KeyboardInterrupt`` is raised again."""
    if workers < 1:
        raise InputError("bad-workers", f"--workers must be at least 1, got {workers}")
    if address:
        check_address(address)
    out = Path(out_dir).resolve()
    studies = discover(studies_dir, exclude=out)
    per_study = load_covariates(covariates, [s.name for s in studies]) if covariates is not None else {}
    if on_plan:
        on_plan(studies, per_study)
    (out / "studies").mkdir(parents=True, exist_ok=True)
    with _only_batch(out):
        return _run_locked(studies, per_study, studies_dir, out, workers=workers, address=address, on_result=on_result,
                           keep_artifacts=keep_artifacts, covariates=covariates)


def _run_locked(studies: list[Study], per_study: dict[str, Covariates], studies_dir: str | Path, out: Path, *, workers: int,
                address: str | None, on_result: Event | None, keep_artifacts: bool, covariates: str | Path | None) -> BatchSummary:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    outcomes: list[StudyOutcome] = []
    todo: list[Study] = []
    again: dict[str, int] = {}
    salt = _deployment_salt()
    manifests = {s.name: read_manifest(out / "studies" / s.name) for s in studies}
    mine = salt_id(salt)
    for s in studies:  # every study first: a refusal comes before any study is analysed
        _check_salt(out, s.name, manifests[s.name], mine)
    for s in studies:
        # without --covariates a rerun resumes: finished studies keep the covariates they were analysed with
        wanted = covariates_sha256(per_study.get(s.name)) if covariates is not None else None
        why = study_status(out / "studies" / s.name, wanted, s.path, manifest=manifests[s.name])
        if why is None:
            outcomes.append(StudyOutcome(study=s.name, status="skipped"))
            continue
        todo.append(s)
        if why != "not analysed":
            log.info("analysing a study again", study=s.name, reason=why)
            again[why] = again.get(why, 0) + 1
    total = len(studies)
    for o in outcomes:
        if on_result:
            on_result(o, len(outcomes), total)
    engine = f"dask:{address}" if address else f"dask:LocalCluster({workers} worker processes, 1 task each)"

    def summary(status: str) -> BatchSummary:
        wall = time.perf_counter() - t0
        analysed = [o for o in outcomes if o.status != "skipped"]
        finished = {o.study for o in outcomes if o.status in ("done", "skipped")}
        table = write_table(out, finished) if status != "running" else None
        result = BatchSummary(
            status=status, studies_dir=str(Path(studies_dir).resolve()), out_dir=str(out), engine=engine,
            workers=workers if not address else None, started_at=started_at, wall_s=round(wall, 2), n_studies=total,
            done=sum(o.status == "done" for o in outcomes), skipped=sum(o.status == "skipped" for o in outcomes),
            failed=sum(o.status == "failed" for o in outcomes), analysed_again=again,
            studies_per_min=round(len(analysed) / wall * 60, 2) if analysed and wall > 0 else None,
            done_per_min=round(sum(o.status == "done" for o in analysed) / wall * 60, 2) if analysed and wall > 0 else None,
            table=str(table) if table else None, failures=[o for o in outcomes if o.status == "failed"],
            covariates=str(Path(covariates).resolve()) if covariates is not None else None,
        )
        write_atomic(out / SUMMARY, result.model_dump_json(indent=1))
        return result

    try:
        if todo:
            # once the cluster is ready (a refused one changes nothing): a summary left by an earlier batch must
            # not pass for this one's while it runs, or once it is killed
            _analyse(todo, per_study, studies_dir, out, salt, outcomes, total, workers=workers, address=address,
                     on_result=on_result, keep_artifacts=keep_artifacts, on_ready=lambda: summary("running"))
    except KeyboardInterrupt:
        done = summary("interrupted")
        log.warning("batch interrupted", done=done.done, failed=done.failed, not_analysed=total - len(outcomes))
        raise
    result = summary("finished")
    log.info("batch finished", done=result.done, skipped=result.skipped, failed=result.failed, wall_s=result.wall_s)
    return result


def _analyse(todo: list[Study], per_study: dict[str, Covariates], studies_dir: str | Path, out: Path, salt: bytes,
             outcomes: list[StudyOutcome], total: int, *, workers: int, address: str | None, on_result: Event | None,
             keep_artifacts: bool, on_ready: Callable[[], Any]) -> None:
    """Run ``todo`` on Dask, appending each outcome to ``outcomes`` as it finishes; ``on_ready`` once the cluster passed its checks."""
    samples = [str(s.path) for s in (todo[0], todo[len(todo) // 2], todo[-1])]
    # connected (and a given cluster checked) before the knowledge index is built: a wrong address fails fast
    client, cluster, threads = _client(workers, address, Path(studies_dir).resolve(), out, samples)
    try:
        on_ready()
        _warm_shared_stores()
        futures = {client.submit(analyse_study, s.name, str(s.path), str(out), salt, torch_threads=threads,
                                 keep_artifacts=keep_artifacts, covariates=per_study.get(s.name), client_version=__version__,
                                 key=f"study-{s.name}-{os.urandom(4).hex()}", pure=False): s
                   for s in todo}

        def record(outcome: StudyOutcome) -> None:
            outcomes.append(outcome)
            if on_result:
                on_result(outcome, len(outcomes), total)

        _collect(client, futures, record, where=f"the Dask scheduler at {address}" if address else "the local cluster")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
