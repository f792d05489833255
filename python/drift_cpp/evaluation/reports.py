"""Reports of evaluation results: markdown tables and plots (matplotlib, imported lazily)."""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from ..errors import DriftError
from ..fileio import save_figure


# ------------------------------------------------------------------- reporting
def format_table(results: dict, title: Optional[str] = None, digits: int = 3) -> str:
    """A markdown table: one row per method, one column per k, cells 'mean ± std'."""
    ks = results["ks"]
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    if not ks:
        skipped = results.get("skipped_ks", [])
        return "\n".join(lines + [f"(no training size fits; skipped k = {skipped})"]) + "\n"
    lines.append("| method | " + " | ".join(f"k={k}" for k in ks) + " |")
    lines.append("|---|" + "---|" * len(ks))
    for label, r in results["methods"].items():
        cells = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(r["mean"], r["std"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figure(n_panels: int, ncols: int = 3, size=(4.2, 3.3)):
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    except ImportError:
        raise DriftError("matplotlib is not installed: pip install 'drift-cpp[plot]'") from None
    ncols = min(ncols, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _panels(results) -> dict[str, dict]:
    if isinstance(results, Mapping) and "methods" in results and "ks" in results:
        return {"": results}
    return dict(results)


def plot(results, path, title: Optional[str] = None, methods: Optional[Sequence[str]] = None) -> None:
    """Accuracy vs number of training pairs (paper Figure 3): mean with a ±1 std band.

    `results` is one result dict or a mapping panel title -> result dict (one panel each).
    """
    panels = _panels(results)
    fig, axes = _figure(len(panels))
    for ax, (name, r) in zip(axes, panels.items()):
        for label, m in r["methods"].items():
            if methods is not None and label not in methods:
                continue
            if not r["ks"]:
                continue
            mean, std = np.array(m["mean"]), np.array(m["std"])
            line, = ax.plot(r["ks"], mean, marker="o", markersize=3, label=label)
            ax.fill_between(r["ks"], mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        if len(r["ks"]) > 1 and max(r["ks"]) / max(min(r["ks"]), 1) >= 8:
            ax.set_xscale("log")
            ax.set_xticks(r["ks"], [str(k) for k in r["ks"]])
            ax.minorticks_off()
        ax.set_xlabel("training pairs (k)")
        ax.set_ylabel("test accuracy")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    save_figure(fig, path, dpi=110)


def plot_bars(values: Mapping[str, Mapping[str, tuple[float, float]]], path, title: Optional[str] = None,
              ylabel: str = "test accuracy") -> None:
    """Grouped bars (paper Figure 4): values[group][bar] = (mean, std)."""
    groups = list(values)
    bars = list(dict.fromkeys(b for g in groups for b in values[g]))
    fig, (ax,) = _figure(1, size=(max(6.0, 1.1 * len(groups) * max(len(bars), 1) * 0.35 + 2), 3.6))
    width = 0.8 / max(len(bars), 1)
    x = np.arange(len(groups))
    for i, b in enumerate(bars):
        means = [values[g].get(b, (np.nan, 0.0))[0] for g in groups]
        stds = [values[g].get(b, (np.nan, 0.0))[1] for g in groups]
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=b)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, 1.0)
    ax.legend(fontsize="small", ncols=min(len(bars), 5))
    if title:
        ax.set_title(title)
    save_figure(fig, path, dpi=110)
