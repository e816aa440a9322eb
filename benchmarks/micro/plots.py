"""The figures of a ``benchmarks.micro`` run: ``micro_fbr_scaling.png`` and
``micro_cost_per_step.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _machine(res: dict[str, Any]) -> str:
    """The CPU and thread count every figure names in its title."""
    mc = res["meta"]["machine"]
    return f"{mc['cpu_model']}, {mc['torch_threads']} thread(s)"


def fbr_scaling_figure(res: dict[str, Any], plt: Any) -> Any:
    """FBR time per batch vs M and vs B, ours and the Gram reference (log-log)."""
    sc = res["fbr_scaling"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, axis, key, at in ((axes[0], "M", "vs_M", "B"), (axes[1], "B", "vs_B", "M")):
        groups = sorted({r[at] for r in sc[key]})
        for gi, gv in enumerate(groups):
            rows = sorted((r for r in sc[key] if r[at] == gv), key=lambda r: r[axis])
            xs = [r[axis] for r in rows]
            col = f"C{gi}"
            ax.loglog(xs, [r["reference_us"] / 1e3 for r in rows], "s--", color=col,
                      label=f"reference (Gram), {at}={gv}")
            ax.loglog(xs, [r["ours_us"] / 1e3 for r in rows], "o-", color=col,
                      label=f"ours, {at}={gv}")
            ax.loglog(xs, [r["ours_clean_per_call_us"] / 1e3 for r in rows], ":",
                      color=col, alpha=0.6, label=f"ours, clean batch per call, {at}={gv}")
        ax.set_xlabel(f"{axis} ({'clean set size' if axis == 'M' else 'batch size'})")
        ax.set_ylabel("time per batch (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"FBR weights per batch, D={sc['D']}, C={sc['C']} ({_machine(res)})",
                 fontsize=9)
    return fig


def cost_per_step_figure(res: dict[str, Any], plt: Any) -> Any:
    """Cost per training batch of FBR, L2RW and the classic lookahead, in plain steps."""
    x = res["l2rw"]["x_plain_step"]
    s = res["fbr_vs_step"]
    bars = [("plain step", 1.0, "C7"),
            ("FBR weights", s["fbr_fraction_of_step"], "C2"),
            ("FBR-weighted step", s["fbr_step_over_plain"], "C2"),
            ("L2RW last layer\n(+ clean fwd)", x["last_layer_with_clean_forward"], "C1"),
            ("L2RW full, JVP\n(weights)", x["jvp_weights"], "C0"),
            ("L2RW full, JVP\n(+ weighted step)", x["jvp_total"], "C0"),
            ("L2RW full, fused\n(weights_and_\nlosses + step)", x["fused_total"], "C9"),
            ("classic lookahead\n(weights)", x["classic_weights"], "C3"),
            ("classic lookahead\n(+ weighted step)", x["classic_total"], "C3")]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(range(len(bars)), [b[1] for b in bars], color=[b[2] for b in bars])
    for i, b in enumerate(bars):
        ax.text(i, b[1], f"{b[1]:.2f}" if b[1] >= 0.01 else f"{b[1]:.1e}", ha="center",
                va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    ax.axhline(1.7, color="k", ls=":", lw=1, label="target 1.7x (JVP path)")
    ax.set_ylabel("time / plain training step")
    ax.legend(fontsize=8)
    ax.set_title(f"Cost per training batch in plain steps ({res['l2rw']['model']}, "
                 f"B={res['l2rw']['B']}, {_machine(res)})", fontsize=9)
    return fig


#: file name -> (sections it needs, the function drawing it)
FIGURES = {
    "micro_fbr_scaling.png": (("fbr_scaling",), fbr_scaling_figure),
    "micro_cost_per_step.png": (("l2rw", "fbr_vs_step"), cost_per_step_figure),
}


def plots(res: dict[str, Any], fig_dir: Path) -> list[str]:
    """Draw every figure whose sections are in ``res`` into ``fig_dir``; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (needs, draw) in FIGURES.items():
        if not all(k in res for k in needs):
            continue
        fig = draw(res, plt)
        fig.tight_layout()
        p = fig_dir / name
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(str(p))
    return written
