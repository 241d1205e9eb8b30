"""Pictures of benchmark results, written beside their JSON (matplotlib: `pip install exsynth[bench]`).

`plot_op(json_path)` draws an op runner's rows (correlation, pn_modulate, msca): one column per
mode (fwd, fwd+bwd); rows time (ms), speed-up against the run's anchor (the first `vs_*` key)
and peak memory, each against the size (hw, or side^2), one line per implementation and
configuration. `python -m bench plot FILE.json ...` redraws committed results.
"""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from typing import List, Optional

SIZE_KEYS = ("hw", "side")
SKIP_KEYS = {"ms", "gflops", "gbps", "peak_mib", "floor_mib", "impl", "mode", "dtype"}


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def _size(row) -> Optional[int]:
    if "hw" in row:
        return int(row["hw"])
    if "side" in row:
        return int(row["side"]) ** 2
    return None


def plot_op(json_path: str, png_path: Optional[str] = None) -> Optional[str]:
    """PNG of an op runner's JSON; None (with a note on stderr) without matplotlib or sizes."""
    plt = _pyplot()
    if plt is None:
        print("# no matplotlib: pip install exsynth[bench] for the PNG", file=sys.stderr)
        return None
    with open(json_path) as f:
        data = json.load(f)
    rows = [r for r in data.get("results", []) if _size(r) is not None and r.get("ms") is not None]
    if not rows:
        return None
    anchor = next((k for k in rows[0] if k.startswith("vs_") and k != "vs_best_anchor"), None)
    modes = sorted({r.get("mode", "fwd") for r in rows}, key=lambda m: (m != "fwd", m))
    fixed = [k for k in rows[0] if k not in SKIP_KEYS and k not in SIZE_KEYS and not k.startswith("vs_")]
    varying = [k for k in fixed if len({r.get(k) for r in rows}) > 1]
    panels = [("ms", "time (ms)", True)] + ([(anchor, f"speed-up ({anchor[3:]} = 1)", False)] if anchor else []) + \
        [("peak_mib", "peak memory (MiB)", False)]
    impls = sorted({r["impl"] for r in rows})
    configs = sorted({tuple(r.get(k) for k in varying) for r in rows}, key=str)
    cmap = plt.get_cmap("tab20" if len(configs) > 10 else "tab10")
    color = {c: cmap(i % cmap.N) for i, c in enumerate(configs)}
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "v", "D", "x"]
    style = {m: (styles[i % 4], markers[i % 6]) for i, m in enumerate(impls)}
    fig, axes = plt.subplots(len(panels), len(modes), figsize=(6.5 * len(modes), 3.4 * len(panels) + 1.2),
                             squeeze=False)
    for j, mode in enumerate(modes):
        lines = defaultdict(list)
        for r in rows:
            if r.get("mode", "fwd") == mode:
                lines[(r["impl"], tuple(r.get(k) for k in varying))].append(r)
        for i, (metric, title, logy) in enumerate(panels):
            ax = axes[i][j]
            for (impl, cfg), rs in sorted(lines.items(), key=str):
                rs = sorted(rs, key=_size)
                ys = [r.get(metric) for r in rs]
                if all(y is None for y in ys):
                    continue
                ls, mk = style[impl]
                ax.plot([_size(r) for r in rs], ys, ls=ls, marker=mk, ms=3, lw=1, color=color[cfg])
            ax.set_xscale("log", base=2)
            if logy:
                ax.set_yscale("log")
            if metric == anchor:
                ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.set_title(f"{title}, {mode}", fontsize=9)
            ax.set_xlabel("positions (H*W)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color="black", ls=style[m][0], marker=style[m][1], label=m) for m in impls]
    handles += [Line2D([], [], color=color[c], lw=3, label=" ".join(f"{k}={v}" for k, v in zip(varying, c)) or "all")
                for c in configs]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False)
    env = data.get("environment", {})
    fig.suptitle(f"{os.path.basename(json_path)}: {env.get('gpu') or env.get('cpu', '')} "
                 f"(torch {env.get('torch', '?')}, {env.get('threads', '?')} threads)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.012 * (len(impls) + len(configs)) / 6, 1, 0.97))
    out = png_path or os.path.splitext(json_path)[0] + ".png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(paths: List[str]) -> int:
    for p in paths:
        out = plot_op(p)
        print(f"# wrote {out}" if out else f"# {p}: nothing to plot")
    return 0
