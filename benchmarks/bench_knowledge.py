"""Knowledge index: build time from scratch, query latency, top-3 retrieval accuracy.

    python benchmarks/bench_knowledge.py
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import structlog

log = structlog.get_logger("bench_knowledge")
QUESTIONS = Path(__file__).parents[1] / "tests" / "data" / "knowledge_questions.json"


def main() -> None:
    t0 = time.perf_counter()
    from cardiomics.tools.knowledge import KnowledgeIndex, load_corpus

    t_import = time.perf_counter() - t0
    docs, _ = load_corpus()
    t1 = time.perf_counter()
    cold = KnowledgeIndex(tempfile.mkdtemp(prefix="kb-cold-"))  # includes loading the embedding model
    t_cold = time.perf_counter() - t1
    t2 = time.perf_counter()
    warm = KnowledgeIndex(tempfile.mkdtemp(prefix="kb-warm-"))  # model already in memory
    t_warm = time.perf_counter() - t2
    t3 = time.perf_counter()
    KnowledgeIndex(warm.path)  # reopen: no rebuild
    t_reopen = time.perf_counter() - t3

    qs = json.loads(QUESTIONS.read_text())["questions"]
    times, top1, top3 = [], 0, 0
    for item in qs:
        s = time.perf_counter()
        ids = [h.document.id for h in warm.search(item["q"], 3)]
        times.append(time.perf_counter() - s)
        top1 += ids[0] == item["expected"]
        top3 += item["expected"] in ids
    result = {
        "n_documents": len(docs), "import_s": round(t_import, 3),
        "build_from_scratch_s_incl_model_load": round(t_cold, 2), "build_s_model_loaded": round(t_warm, 2),
        "embedding_only_s": round(warm.build_seconds, 2), "reopen_existing_index_s": round(t_reopen, 3),
        "query_median_ms": round(1000 * statistics.median(times), 1), "query_max_ms": round(1000 * max(times), 1),
        "top1": f"{top1}/{len(qs)}", "top3": f"{top3}/{len(qs)}", "cold_built": cold.built_now,
    }
    out = Path(__file__).parent / "results" / "bench_knowledge.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    log.info("bench_knowledge", **result, written=str(out))


if __name__ == "__main__":
    main()
