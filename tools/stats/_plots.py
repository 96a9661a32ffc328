"""Volcano and forest plots of an association scan (matplotlib, Agg backend, PNG bytes)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def volcano(beta, p, sig, labels, q: float, n_labels: int = 8) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    y = -np.log10(np.clip(p, 1e-300, 1))
    ax.scatter(beta[~sig], y[~sig], s=12, c="#9a9a9a", label="not significant")
    ax.scatter(beta[sig], y[sig], s=16, c="#c0392b", label=f"BH q < {q:g}")
    for i in np.argsort(p)[: min(n_labels, int(sig.sum()))]:
        ax.annotate(labels[i], (beta[i], y[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("standardised beta (SD per SD)")
    ax.set_ylabel("-log10 p")
    ax.set_title("Radiogenomic association scan")
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def forest(beta, lower, upper, p, labels, top_n: int) -> bytes:
    order = np.argsort(p)[:top_n][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(order) + 1.2))
    ypos = np.arange(len(order))
    ax.errorbar(beta[order], ypos, xerr=[beta[order] - lower[order], upper[order] - beta[order]],
                fmt="o", ms=4, color="#2c3e50", ecolor="#7f8c8d", capsize=2)
    ax.axvline(0, color="k", lw=0.6, ls="--")
    ax.set_yticks(ypos, [labels[i] for i in order], fontsize=7)
    ax.set_xlabel("standardised beta with 95 % CI")
    ax.set_title(f"Top {len(order)} associations by p-value")
    return _png(fig)
