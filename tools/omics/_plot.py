"""Figure: spots coloured by domain and by a programme score, over the tissue image when present."""

from __future__ import annotations

import io

import numpy as np


def domains_figure(coords: np.ndarray, domains: np.ndarray, score: np.ndarray | None, score_name: str,
                   image: np.ndarray | None, scale: float | None, spot_px: float | None) -> bytes:
    """PNG bytes. ``coords`` in full-resolution pixels; ``scale`` maps them onto ``image``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    xy = coords * (scale if (image is not None and scale) else 1.0)
    panels = 2 if score is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 6), dpi=110, squeeze=False)
    extent = np.ptp(xy, axis=0).max() or 1.0
    size = ((spot_px * (scale or 1.0)) if spot_px and image is not None else extent / 45) ** 2 * 0.5
    size = float(np.clip(size, 4, 200))
    cmap = plt.get_cmap("tab10" if domains.max() < 10 else "tab20")
    for ax in axes[0]:
        if image is not None:
            ax.imshow(image)
        ax.set_axis_off()
        ax.set_aspect("equal")
        if image is None:
            ax.invert_yaxis()
    ax = axes[0][0]
    for d in np.unique(domains):
        m = domains == d
        ax.scatter(xy[m, 0], xy[m, 1], s=size, color=cmap(int(d) % cmap.N), label=f"domain {d} (n={m.sum()})",
                   edgecolors="none", alpha=0.85)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, markerscale=1.5)
    ax.set_title("Spatial domains (expression + neighbourhood)")
    if score is not None:
        ax = axes[0][1]
        lim = float(np.nanpercentile(np.abs(score), 99)) or 1.0
        sc = ax.scatter(xy[:, 0], xy[:, 1], s=size, c=score, cmap="RdBu_r", vmin=-lim, vmax=lim,
                        edgecolors="none", alpha=0.9)
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02, label="ULM t-value")
        ax.set_title(f"Programme score: {score_name}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
