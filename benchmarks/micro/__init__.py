"""Micro-benchmarks: FBR's per-batch cost and exact L2RW's cost, against the references.

Run ``python -m benchmarks.micro`` (full size, a few minutes on 2 CPU cores) or
``python -m benchmarks.micro --smoke`` (seconds; what CI runs). It prints Markdown tables with
the command and the machine beside them, writes ``micro.json`` and ``micro.md`` to ``--out``
(default ``results/micro/``) and the plots ``micro_*.png`` to ``--figures`` (default
``docs/figures/``; for ``--smoke``, ``<out>/figures``).

Sections (each timed side by side in interleaved rounds, see ``benchmarks.micro.harness``):

1. ``fbr_sweep``: FBR weights per batch, the library (clean statistics cached by ``set_clean``;
   with and without tensor validation; and with the clean batch passed on every call) vs the
   literal B x M Gram reference (``benchmarks.micro.refs.GramFBR``), over B, D, C, M.
2. ``fbr_scaling``: the same, time vs M and vs B, for the plots.
3. ``fbr_vs_step``: FBR weights vs one training step of the benchmark CPU net.
4. ``l2rw``: exact full-network L2RW (clean backward + forward-mode JVP) and the last-layer
   closed form vs a plain step and vs Ren et al.'s lookahead (virtual step + second-order
   backward), on the same model and batch.
5. ``spearman``: rank correlation of last-layer and full-network L2RW scores on a briefly trained
   benchmark model (the real CIFAR-10N subset when present).
6. ``checks``: the library's weights against the references (float64 and float32).

Only the public API of ``robustweights`` is used; the references are written in
``benchmarks/micro/refs.py``.
"""

from benchmarks.micro.cli import SECTIONS, main, parse_args
from benchmarks.micro.common import Sizes

__all__ = ["SECTIONS", "Sizes", "main", "parse_args"]
