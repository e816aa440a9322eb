"""Fuzz driver of :class:`~robustweights.ModelMetaReweighter` (``--drivers model_meta``).

Models with BatchNorm and Dropout, in train or eval mode (switched by a step), ``num_classes``
given or not, every ``normalization``, a third under ``torch.autocast("cpu",
dtype=torch.bfloat16)``. Steps: ``set_clean``, ``update_clean``, ``reset_clean``, ``weights``
and ``weights_and_losses`` with the cached or a per-call clean batch, state round trips, and the
caller's SGD steps and mode switches between them. Bad inputs: float, ``(B, 1)``,
out-of-range, NumPy, list and missing labels, NaN inputs, wrong batch sizes, empty batches,
missing inputs, positional arguments, no clean set, a state dict with an unknown key.

Left out, as the user's model's to refuse rather than the library's: a batch of one sample for
BatchNorm in train mode, NaN inputs to ``weights_and_losses`` (the training forward) with
BatchNorm in train mode (they poison its running statistics for every later call), and
without ``num_classes`` a label above the model's outputs (the loss function sees the upper end,
as documented). See :mod:`benchmarks.fuzz_steps` for the contract.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

import robustweights
from benchmarks.fuzz_steps import (
    BAD_LABELS,
    Step,
    bad_labels,
    check_normalized,
    check_vector,
    round_trip,
    same_state,
)

__all__ = ["ModelMetaDriver"]


class ModelMetaDriver:
    """One :class:`ModelMetaReweighter` on a small MLP with BatchNorm and Dropout."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.C = C = int(rng.integers(2, 5))
        self.D = D = int(rng.integers(2, 6))
        H = int(rng.integers(3, 9))
        self.bn = bool(rng.random() < 0.5)
        layers: list[nn.Module] = [nn.Linear(D, H)]
        if self.bn:
            layers.append(nn.BatchNorm1d(H))
        layers.append(nn.Tanh())
        if rng.random() < 0.5:
            layers.append(nn.Dropout(0.3))
        layers.append(nn.Linear(H, C))
        self.net = nn.Sequential(*layers)
        self.net.train(bool(rng.random() < 0.6))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1)
        self.g = torch.Generator().manual_seed(int(rng.integers(0, 2**31)))
        self.num_classes = C if rng.random() < 0.8 else None
        self.normalization = str(rng.choice(("sum", "mean", "none")))
        self.ctor: dict[str, Any] = {
            "model": self.net, "loss_fn": nn.CrossEntropyLoss(reduction="none"),
            "num_classes": self.num_classes, "lr": float(rng.choice((1.0, 0.1))),
            "normalization": self.normalization}
        self.rw = robustweights.ModelMetaReweighter(**self.ctor)
        self.autocast = bool(rng.random() < 1 / 3)
        self.cached = False
        self.description = (f"model_meta C={C} D={D} H={H} bn={self.bn} "
                            f"train={self.net.training} num_classes={self.num_classes} "
                            f"normalization={self.normalization} autocast={self.autocast}")

    def close(self) -> None:
        pass

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return (torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast
                else contextlib.nullcontext())

    def _min_rows(self) -> int:
        return 2 if self.bn and self.net.training else 1  # BatchNorm needs two in train mode

    def _batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randn(n, self.D, generator=self.g),
                torch.randint(0, self.C, (n,), generator=self.g))

    def steps(self) -> Iterator[Step]:
        rng = self.rng
        for _ in range(int(rng.integers(6, 25))):
            r = rng.random()
            if r < 0.15:
                yield self.clean_step("set_clean")
            elif r < 0.25:
                yield self.clean_step("update_clean")
            elif r < 0.3:
                yield Step("reset_clean()", self.rw.reset_clean,
                           after=lambda _: setattr(self, "cached", False))
            elif r < 0.8:
                yield self.weights_step()
            elif r < 0.87:
                self.sgd_step()
            elif r < 0.92:
                self.net.train(not self.net.training)
            else:
                yield self.state_step()

    def sgd_step(self) -> None:
        """The caller's training step (not a library call)."""
        x, y = self._batch(4)
        self.opt.zero_grad()
        nn.functional.cross_entropy(self.net(x), y).backward()
        self.opt.step()

    def _corrupt(self, x: torch.Tensor, y: torch.Tensor, prefix: str, nan_ok: bool = True
                 ) -> tuple[Any, Any, str, str | None, str]:
        """Inputs and labels made invalid; the expectation and the argument to name."""
        rng = self.rng
        bad = str(rng.choice(("labels", "nan", "rows", "missing_inputs", "missing_labels",
                              "empty", "numpy_inputs")))
        if bad == "nan" and not nan_ok:
            bad = "rows"
        if bad == "labels":
            kind = str(rng.choice(BAD_LABELS))
            labels = bad_labels(rng, y, self.C, kind, high=self.num_classes is not None)
            expect = "either" if kind in ("numpy", "list") else "error"
            return x, labels, expect, prefix + "labels", f"labels {kind}"
        if bad == "nan":
            x = x.clone()
            x.view(-1)[int(rng.integers(0, x.numel()))] = float("nan")
            return x, y, "error", prefix + "inputs", bad
        if bad == "rows":
            return x, torch.cat([y, y[:1]]), "error", None, bad
        if bad == "missing_inputs":
            return None, y, "error", prefix + "inputs", bad
        if bad == "numpy_inputs":
            return x.numpy(), y, "error", prefix + "inputs", bad
        if bad == "missing_labels":
            return x, None, "error", prefix + "labels", bad
        return x[:0], y[:0], "either", None, bad

    def clean_step(self, method: str) -> Step:
        rng = self.rng
        x, y = self._batch(int(rng.integers(self._min_rows(), 10)))
        expect, bad_arg, what = "ok", None, "valid"
        if rng.random() < 0.25:
            x, y, expect, bad_arg, what = self._corrupt(x, y, "")  # type: ignore[assignment]
        fn = getattr(self.rw, method)

        def call() -> Any:
            with self.context():
                return fn(inputs=x, labels=y)

        def after(_: Any) -> None:
            if x is not None and len(x):
                self.cached = True

        return Step(f"{method}({what})", call, expect=expect, bad_arg=bad_arg, after=after)

    def weights_step(self) -> Step:
        rng = self.rng
        n = int(rng.integers(self._min_rows(), 13))
        x, y = self._batch(n)
        per_call = (not self.cached) or rng.random() < 0.5
        kw: dict[str, Any] = {"inputs": x, "labels": y}
        if per_call and rng.random() < 0.9:
            kw["clean_inputs"], kw["clean_labels"] = self._batch(
                int(rng.integers(self._min_rows(), 10)))
        expect, bad_arg, what = "ok", None, "valid"
        and_losses = rng.random() < 0.3
        if rng.random() < 0.3:
            prefix = "clean_" if "clean_inputs" in kw and rng.random() < 0.4 else ""
            # weights_and_losses is the training forward: NaN inputs would poison BatchNorm's
            # running statistics for every later call (the caller's to avoid, as in any forward)
            nan_ok = not (and_losses and self.bn and self.net.training and not prefix)
            kw[prefix + "inputs"], kw[prefix + "labels"], expect, bad_arg, what = self._corrupt(
                kw[prefix + "inputs"], kw[prefix + "labels"], prefix, nan_ok)
            what = prefix + what
            if what == "clean_empty":
                expect = "error"  # an empty clean batch is no clean set
        if "clean_inputs" not in kw and not self.cached and (expect != "error"
                                                             or what == "nan"):
            expect, bad_arg = "error", None  # no clean set at all (NaN shows only later)
        positional = rng.random() < 0.03
        if positional:
            expect, bad_arg = "error", None
        rw = self.rw
        n_out = len(kw["inputs"]) if isinstance(kw.get("inputs"), torch.Tensor) else -1

        def call() -> Any:
            with self.context():
                if positional:
                    return rw.weights(x, y)
                if and_losses:
                    return rw.weights_and_losses(**kw)
                return rw.weights(**kw)

        def check(out: Any) -> str | None:
            w = out
            if and_losses:
                w, losses = out
                bad = check_vector(losses, n_out, what="losses")
                if bad:
                    return bad
            bad = check_vector(w, n_out, low=0.0, what="weights")
            return bad or check_normalized(w, self.normalization, self.autocast)

        name = "weights_and_losses" if and_losses else "weights"
        clean = "per call" if "clean_inputs" in kw else "cached"
        return Step(f"{name}({what}, n={n}, clean {clean}, train={self.net.training})", call,
                    expect=expect, bad_arg=bad_arg, check=check)

    def state_step(self) -> Step:
        rw = self.rw
        if self.rng.random() < 0.25:
            state = rw.state_dict()
            state["bogus"] = 1
            return Step("load_state_dict(state with an unknown key)",
                        lambda: rw.load_state_dict(state), expect="error", bad_arg="state_dict")
        if self.rng.random() < 0.5:
            return Step("load_state_dict(state_dict()) round trip", lambda: round_trip(rw),
                        check=lambda problem: problem)
        x, y = self._batch(int(self.rng.integers(self._min_rows(), 9)))

        def fresh() -> str | None:  # a new reweighter built alike gives the same weights
            other = robustweights.ModelMetaReweighter(**self.ctor)
            other.load_state_dict(rw.state_dict())
            if not same_state(other.state_dict(), rw.state_dict()):
                return "state differs after loading it into a new reweighter"
            if self.cached:
                with self.context():
                    if not torch.equal(other.weights(inputs=x, labels=y),
                                       rw.weights(inputs=x, labels=y)):
                        return "weights differ after loading the state into a new reweighter"
            return None

        return Step("ModelMetaReweighter(...).load_state_dict(state_dict())", fresh,
                    check=lambda problem: problem)
