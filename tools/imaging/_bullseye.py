"""The AHA 16-segment bullseye (polar plot) as a PNG, for regional thickness, thickening and scar.

Standard display (Cerqueira et al., Circulation 2002;105:539-542): basal ring outside, apical
ring inside, anterior (segments 1, 7, 13) at the top, septum on the left, lateral on the right.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, Field


class BullseyeFigure(BaseModel):
    """Same fields as the report's ``Figure``, so a report can take it as is."""

    id: str
    title: str
    png_base64: str = Field(repr=False, description="PNG image, base64-encoded.")
    result_id: str = Field(description="Id of the stored result the figure shows.")


def _wedges() -> list[tuple[int, float, float, float, float]]:
    """(segment, theta_start_rad, theta_width_rad, r_inner, r_outer) in display polar coordinates."""
    out = []
    for offset, r0 in ((0, 2.0), (6, 1.0)):  # basal outer ring, mid ring
        for k in range(6):
            centre = 90.0 + 60.0 * k  # 1 (anterior) at the top, then counter-clockwise: septum on the left
            out.append((offset + k + 1, math.radians(centre - 30.0), math.radians(60.0), r0, r0 + 1.0))
    for k in range(4):
        centre = 90.0 + 90.0 * k
        out.append((13 + k, math.radians(centre - 45.0), math.radians(90.0), 0.0, 1.0))
    return out


def bullseye_png(values: Mapping[int, float | None], title: str, unit: str, *, cmap: str = "viridis",
                 vmin: float | None = None, vmax: float | None = None, decimals: int = 1) -> str:
    """Render one bullseye; missing segments (None / NaN) are grey. Returns base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colors

    finite = [float(v) for v in values.values() if v is not None and np.isfinite(v)]
    lo = vmin if vmin is not None else (min(finite) if finite else 0.0)
    hi = vmax if vmax is not None else (max(finite) if finite else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    norm = colors.Normalize(vmin=lo, vmax=hi)
    colormap = plt.get_cmap(cmap)
    fig = plt.figure(figsize=(4.2, 4.6))
    ax = fig.add_subplot(projection="polar")
    for seg, t0, width, r0, r1 in _wedges():
        v = values.get(seg)
        ok = v is not None and np.isfinite(v)
        face = colormap(norm(float(v))) if ok else (0.8, 0.8, 0.8, 1.0)
        ax.bar(t0 + width / 2, r1 - r0, width=width, bottom=r0, color=face, edgecolor="white", linewidth=1.5)
        label = f"{float(v):.{decimals}f}" if ok else "n/a"
        r_text = (r0 + r1) / 2 if r0 > 0 else 0.55
        lum = 0.299 * face[0] + 0.587 * face[1] + 0.114 * face[2]
        ax.text(t0 + width / 2, r_text, f"{seg}\n{label}", ha="center", va="center", fontsize=7,
                color="black" if lum > 0.5 else "white")
    ax.set_ylim(0, 3.0)
    ax.set_axis_off()
    sm = plt.cm.ScalarMappable(norm=norm, cmap=colormap)
    fig.colorbar(sm, ax=ax, orientation="horizontal", fraction=0.05, pad=0.04, label=unit)
    ax.set_title(title, fontsize=9)
    fig.text(0.02, 0.02, "anterior top, septum left", fontsize=6, color="grey")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def bullseye_figure(fid: str, title: str, values: Mapping[int, float | None], unit: str, result_id: str,
                    **kwargs) -> BullseyeFigure:
    return BullseyeFigure(id=fid, title=title, png_base64=bullseye_png(values, title, unit, **kwargs), result_id=result_id)

