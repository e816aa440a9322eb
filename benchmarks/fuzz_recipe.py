"""Fuzz driver of :class:`~robustweights.SurrogateRecipe` (``--drivers recipe``).

Configurations with ``thresholds="calibrated"`` (with and without ``calibration_data``), the
rate rule, ``pseudo_labels``, ``eval_features`` True/False, smoothing, a floor, the doubt gate,
``health_data``; a third of the sequences under ``torch.autocast("cpu", dtype=torch.bfloat16)``.
Steps: ``start_epoch``, the clean passes (whole or broken off, each batch a ``clean_loss``),
``refresh_prototypes``, a pool batch (forward, ``weights``, ``targets``, ``loss``, ``backward``,
an SGD step), ``end_epoch``, ``directions``, ``state_dict``/``load_state_dict`` round trips.
Bad inputs: float, ``(B, 1)``, out-of-range, NumPy, list and missing labels, NaN features, wrong
numbers of features, inputs or sample ids, empty batches, positional arguments, a missing
forward, missing ``sample_ids`` with smoothing, a bad epoch, a state dict with an unknown key;
wrong order: ``weights()`` before the clean passes ended, ``targets()`` of another batch,
``directions()`` before any prototypes. See :mod:`benchmarks.fuzz_steps` for the contract.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import robustweights
from benchmarks.fuzz_steps import (
    BAD_LABELS,
    Step,
    bad_labels,
    check_scalar,
    check_vector,
    round_trip,
    same_state,
)

__all__ = ["RecipeDriver", "bad_logits"]


def bad_logits(rng: np.random.Generator, n: int, C: int) -> Any:
    """Logits of a batch of ``n`` that are not ``(n, C)``: a row or a column too many, 1-D,
    or a NumPy array."""
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return torch.randn(n + 1, C)
    if kind == 1:
        return torch.randn(n, C + 1)
    if kind == 2:
        return torch.randn(n)
    return np.zeros((n, C), dtype=np.float32)


def _recipe_config(rng: np.random.Generator) -> dict[str, Any]:
    calibrated = rng.random() < 0.35
    return {
        "warmup_epochs": int(rng.integers(0, 3)), "alpha_switch": int(rng.integers(0, 4)),
        "clean_passes": int(rng.choice((0, 1, 1, 2))),
        "clean_batch_size": int(rng.integers(3, 17)),
        "eval_features": bool(rng.random() < 0.5),
        "thresholds": "calibrated" if calibrated else "global",
        "drop_rate": None if calibrated or rng.random() < 0.6 else float(rng.choice((0.2, 0.5))),
        "class_balanced": bool(rng.random() < 0.3),
        "pseudo_labels": bool(rng.random() < 0.4),
        "pseudo_confidence": float(rng.choice((0.0, 0.5, 0.95))),
        "pseudo_ramp_epochs": int(rng.integers(0, 3)),
        "smoothing": float(rng.choice((0.0, 0.0, 0.5))),
        "dropped_weight": float(rng.choice((0.0, 0.0, 0.3))),
        "dropped_doubt": [None, 0.5, 0.9][int(rng.integers(0, 3))],
        "dropped_doubt_until": [None, 1, 40][int(rng.integers(0, 3))],
        "calibration_quantile": float(rng.choice((0.0, 0.2))),
    }


class RecipeDriver:
    """One :class:`SurrogateRecipe` on a small MLP, and a model of its state: which step may
    come next and which must be refused."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.C = C = int(rng.integers(2, 5))
        self.D = D = int(rng.integers(2, 6))
        H = int(rng.integers(3, 9))
        # BatchNorm in train mode refuses a batch of one sample: the clean and pool batches
        # below never have one (the caller's to avoid, as in any training loop)
        self.bn = bool(rng.random() < 0.3)
        self.net = nn.Sequential(nn.Linear(D, H), *([nn.BatchNorm1d(H)] if self.bn else []),
                                 nn.ReLU(), *([nn.Dropout(0.3)] if rng.random() < 0.4 else []),
                                 nn.Linear(H, C))
        self.H = H
        self.opt = torch.optim.SGD(self.net.parameters(), lr=float(rng.choice((0.01, 0.1))))
        M = int(rng.integers(2 * C, 6 * C + 1))
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**31)))
        self.centres = 2.0 * torch.randn(C, D, generator=g)
        self.g = g
        self.options = _recipe_config(rng)
        while self.bn and M % self.options["clean_batch_size"] == 1:
            M += 1
        self.missing: set[int] = set()  # classes without a clean sample
        if C > 2 and rng.random() < 0.15:
            self.missing = {int(c) for c in rng.choice(C, int(rng.integers(1, C - 1)),
                                                      replace=False)}
        present = [c for c in range(C) if c not in self.missing]
        xc, yc = self._data(M, classes=present)
        kw: dict[str, Any] = {}
        clean: Any = (xc, yc)
        if rng.random() < 0.2:  # a DataLoader instead of a pair of tensors
            bs = int(rng.integers(2, 9))
            while self.bn and M % bs == 1:
                bs += 1
            clean = DataLoader(TensorDataset(xc, yc), batch_size=bs, shuffle=False)
        self.missing_class, self.incremental = "error", False
        if rng.random() < 0.3:  # a configured reweighter
            self.missing_class = str(rng.choice(("error", "warn", "ignore")))
            self.incremental = bool(rng.random() < 0.5)
            w_max = float(rng.choice((1.0, 2.0)))
            kw["reweighter"] = robustweights.SurrogateReweighter(
                C, alpha=robustweights.AlphaSchedule(C, self.options["alpha_switch"]),
                mode="incremental" if self.incremental else "recompute",
                missing_class=self.missing_class,  # type: ignore[arg-type]
                missing_class_weight=float(rng.choice((0.0, 0.5))), w_max=w_max)
        if rng.random() < 0.4:
            kw["health_data"] = self._data(int(rng.integers(2, 12)))
        if self.options["thresholds"] == "calibrated" and rng.random() < 0.5:
            kw["calibration_data"] = self._data(int(rng.integers(C, 4 * C + 1)),
                                                classes=present if rng.random() < 0.7 else None)
        self.has_health = "health_data" in kw
        self.ctor = {"num_classes": C, "model": self.net, "head": self.net[-1],
                     "clean_data": clean, **kw, **self.options}
        self.recipe = robustweights.SurrogateRecipe(
            generator=torch.Generator().manual_seed(0), **self.ctor)
        self.w_max = self.recipe.reweighter.w_max
        self.autocast = bool(rng.random() < 1 / 3)
        # the model of the recipe's state
        self.epoch = -1  # before the first start_epoch
        self.stale = True
        self.protos = False
        self.fresh = False  # a training forward not yet used by weights()
        self.fresh_known = True  # whether the driver knows ``fresh``
        self.batch: torch.Tensor | None = None  # labels of the last post-warm-up weights()
        self.description = (f"recipe C={C} D={D} H={H} M={M} {self.options} "
                            f"{sorted(kw)} bn={self.bn} missing classes {sorted(self.missing)} "
                            f"({self.missing_class}), incremental={self.incremental}, "
                            f"DataLoader={not isinstance(clean, tuple)}, "
                            f"autocast={self.autocast}")

    def close(self) -> None:
        self.recipe.remove()

    def _data(self, n: int, classes: list[int] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples: of random classes, or of ``classes`` in turn."""
        y = (torch.tensor(classes)[torch.arange(n) % len(classes)] if classes is not None
             else torch.randint(0, self.C, (n,), generator=self.g))
        return self.centres[y] + torch.randn(n, self.D, generator=self.g), y

    @property
    def in_warmup(self) -> bool:
        return max(self.epoch, 0) < self.options["warmup_epochs"]

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return (torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast
                else contextlib.nullcontext())

    def steps(self) -> Iterator[Step]:
        """Random steps, each drawn from the state the previous ones left."""
        rng = self.rng
        yield from self.start_epoch()
        for _ in range(int(rng.integers(6, 25))):
            r = rng.random()
            if r < 0.1:
                yield from self.start_epoch()
            elif r < 0.25:
                yield from self.clean_passes()
            elif r < 0.3:
                yield self.refresh()
            elif r < 0.75:
                yield from self.pool_batch()
            elif r < 0.82:
                yield self.end_epoch()
            elif r < 0.9:
                yield self.directions()
            else:
                yield self.state_step()

    def start_epoch(self) -> Iterator[Step]:
        r = self.recipe
        if self.rng.random() < 0.1:
            bad = [-1, 1.5, "2", True][int(self.rng.integers(0, 4))]
            yield Step(f"start_epoch({bad!r})", lambda: r.start_epoch(bad),  # type: ignore[arg-type]
                       expect="error", bad_arg="epoch")
            return
        epoch = self.epoch + 1

        def after(_: Any) -> None:
            self.epoch, self.stale = epoch, True

        yield Step(f"start_epoch({epoch})", lambda: r.start_epoch(epoch), after=after)

    def clean_passes(self) -> Iterator[Step]:
        """The clean passes, each batch a ``clean_loss`` call; sometimes broken off."""
        r = self.recipe
        stop = int(self.rng.integers(0, 4)) if self.rng.random() < 0.2 else None
        batches = r.clean_batches()
        k = 0
        while True:
            try:
                xb, yb = next(batches)
            except StopIteration:
                self.stale, self.protos, self.fresh, self.fresh_known = False, True, False, True
                return
            except Exception as e:  # the refresh at the end: a library call
                def reraise(e: Exception = e) -> None:
                    raise e
                yield Step("clean_batches(): the refresh at its end", reraise)
                return
            self.stale = True
            if k:
                self.fresh = False  # resuming marked the previous clean forward as used
            if stop is not None and k >= stop:
                return  # broken off: the prototypes stay out of date
            with self.context():
                logits = self.net(xb)
            self.fresh = True
            def call(logits: torch.Tensor = logits, yb: torch.Tensor = yb) -> Any:
                with self.context():
                    return r.clean_loss(logits, yb)

            yield Step(f"clean_loss(net(xc), yc) of clean batch {k}", call, check=check_scalar,
                       after=self._backward)
            k += 1

    def _backward(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad()
        loss.float().backward()
        self.opt.step()

    def refresh(self) -> Step:
        def after(_: Any) -> None:
            self.stale, self.protos, self.fresh, self.fresh_known = False, True, False, True

        return Step("refresh_prototypes()", self.recipe.refresh_prototypes, after=after)

    def end_epoch(self) -> Step:
        def after(_: Any) -> None:
            if self.has_health:
                self.fresh = False

        def check(report: Any) -> str | None:
            if not isinstance(report, robustweights.phases.HealthReport):
                return f"end_epoch: expected a HealthReport, got {type(report).__name__}"
            for name in ("pool_kept", "heldout_kept", "pool_agreement", "heldout_accuracy"):
                v = getattr(report, name)
                if v is not None and not 0 <= v <= 1:
                    return f"end_epoch: {name} = {v} outside [0, 1]"
            return None

        return Step("end_epoch()", self.recipe.end_epoch, check=check, after=after)

    def directions(self) -> Step:
        r, n = self.recipe, int(self.rng.integers(1, 9))
        x, y = self._data(n)
        use_features = self.rng.random() < 0.3
        feats = torch.randn(n, self.H, generator=self.g)
        bad = str(self.rng.choice(BAD_LABELS)) if self.rng.random() < 0.2 else None
        labels = y if bad is None else bad_labels(self.rng, y, self.C, bad)

        def call() -> Any:
            with self.context():
                if use_features:
                    return r.directions(labels=labels, features=feats)
                return r.directions(labels=labels, inputs=x)

        def after(_: Any) -> None:
            if not use_features:
                self.fresh = False

        expect, bad_arg = "ok", None
        if bad is not None:
            expect, bad_arg = "error", "labels"
        elif not self.protos:
            expect = "error"  # no prototypes yet: an order error
        return Step(f"directions(labels={bad or 'ok'}, "
                    f"{'features' if use_features else 'inputs'}) of {n}", call, expect=expect,
                    bad_arg=bad_arg, check=lambda d: check_vector(d, n, what="directions"),
                    after=after)

    def state_step(self) -> Step:
        r = self.recipe
        if self.rng.random() < 0.25:
            state = r.state_dict()
            state["bogus"] = 1
            return Step("load_state_dict(state with an unknown key)",
                        lambda: r.load_state_dict(state), expect="error", bad_arg="state_dict")
        if self.rng.random() < 0.5:
            return Step("load_state_dict(state_dict()) round trip", lambda: round_trip(r),
                        check=lambda problem: problem)

        _, y = self._data(int(self.rng.integers(1, 9)))
        f = torch.randn(len(y), self.H, generator=self.g)

        def fresh() -> str | None:  # a new recipe built alike resumes exactly
            ctor = dict(self.ctor)
            if "reweighter" in ctor:  # its own, as a resumed run builds it
                ctor["reweighter"] = copy.deepcopy(ctor["reweighter"])
            other = robustweights.SurrogateRecipe(**ctor)
            try:
                other.load_state_dict(r.state_dict())
                if not same_state(other.state_dict(), r.state_dict()):
                    return "state differs after loading it into a new recipe"
                if self.protos and not torch.equal(other.directions(labels=y, features=f),
                                                   r.directions(labels=y, features=f)):
                    return "directions differ after loading the state into a new recipe"
                return None
            finally:
                other.remove()

        return Step("SurrogateRecipe(...).load_state_dict(state_dict())", fresh,
                    check=lambda problem: problem)

    # ------------------------------------------------------------------ a pool batch
    def pool_batch(self) -> Iterator[Step]:
        rng, r, C = self.rng, self.recipe, self.C
        n = 0 if rng.random() < 0.05 else int(rng.integers(1, 13))
        if self.bn and n < 2:
            n = 2
        x, y = self._data(n)
        ids = torch.randperm(64, generator=self.g)[:n]
        bad = None
        if rng.random() < 0.35:
            bad = str(rng.choice(("labels", "nan_features", "feature_rows", "input_rows",
                                  "id_rows", "missing_forward", "positional", "no_ids",
                                  "logits")))
        eval_features = self.options["eval_features"]
        if bad == "missing_forward" and (eval_features or self.fresh or not self.fresh_known):
            bad = "labels"
        if bad in ("nan_features", "feature_rows") and eval_features:
            bad = "input_rows"
        logits = None
        if bad != "missing_forward":
            with self.context():
                logits = self.net(x)
            self.fresh = True
        kw: dict[str, Any] = {"labels": y, "inputs": x}
        if rng.random() < 0.8 and bad != "no_ids":
            kw["sample_ids"] = ids
        if logits is not None and rng.random() < 0.7:
            kw["logits"] = logits.detach()
        # The faults of this call by the phase weights() finds them in: its input checks (1),
        # the warm-up's (2), the order (3), the computation of the weights (4). The earliest
        # phase's fault must be named; where that phase has several, any of them. An empty
        # batch may give (empty) weights or any named error.
        faults: list[tuple[int, str | None]] = []
        if bad == "labels":
            kind = str(rng.choice(BAD_LABELS))
            kw["labels"] = bad_labels(rng, y, C, kind)
            faults.append((1, "labels"))
        elif bad == "nan_features":
            f = torch.randn(n, self.H, generator=self.g)
            if n:
                f.view(-1)[int(rng.integers(0, f.numel()))] = float("nan")
                faults.append((2 if self.in_warmup else 4, "features"))
            kw["features"] = f
        elif bad == "feature_rows":
            kw["features"] = torch.randn(n + 1, self.H, generator=self.g)
            faults.append((1, "features"))
        elif bad == "input_rows":
            kw["inputs"] = torch.randn(n + 1, self.D, generator=self.g)
            faults.append((1, "inputs"))
        elif bad == "id_rows":
            kw["sample_ids"] = torch.arange(n + 1)
            faults.append((1, "sample_ids"))
        elif bad == "missing_forward":
            faults.append((1, "features"))
        elif bad == "positional":
            faults.append((0, None))
        elif bad == "logits":
            kw["logits"] = bad_logits(rng, n, C)
            faults.append((1, "logits"))
        elif bad == "no_ids":
            kw.pop("sample_ids", None)
        if not self.in_warmup:
            if self.stale:
                faults.append((3, None))  # before the clean passes ended: an order error
            if "sample_ids" not in kw and (self.options["smoothing"] or self.incremental):
                faults.append((4, "sample_ids"))
            labels_now = kw["labels"]
            if (self.missing and self.missing_class == "error" and bad != "labels"
                    and any(int(c) in self.missing for c in labels_now)):
                faults.append((4, "labels"))
        if faults:
            first = min(p for p, _ in faults)
            named = {a for p, a in faults if p == first}
            expect, bad_arg = "error", (named.pop() if len(named) == 1 else None)
        else:
            expect, bad_arg = "ok", None
        if n == 0:
            expect, bad_arg = "either", None

        def call() -> Any:
            with self.context():
                if bad == "positional":
                    return r.weights(y, x)
                return r.weights(**kw)

        result: dict[str, Any] = {}

        def after(w: Any) -> None:
            self.fresh, self.fresh_known = False, True  # the forward is used
            self.batch = None if self.in_warmup else y
            result["w"] = w

        def after_error() -> None:
            if not faults or min(p for p, _ in faults) >= 2:
                # refused after the checks of its inputs: the batch is forgotten, and whether
                # the forward counts as used depends on how far the call went
                self.batch, self.fresh_known = None, False

        desc = (f"weights({bad or 'valid'}: n={n}, keys={sorted(kw)}) in epoch {self.epoch}"
                f"{' (warm-up)' if self.in_warmup else ''}")
        yield Step(desc, call, expect=expect, bad_arg=bad_arg,
                   check=lambda w: check_vector(w, n, low=0.0, high=self.w_max, what="weights"),
                   after=after, after_error=after_error)
        if "w" in result and logits is not None:
            yield from self.targets_and_loss(x, y, result["w"], logits)

    def targets_and_loss(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                         logits: torch.Tensor) -> Iterator[Step]:
        rng, r, n = self.rng, self.recipe, y.shape[0]
        tw, tl = w, y
        if rng.random() < 0.7:
            bad = str(rng.choice(("weights", "labels", "other_batch", "logits", "peer_logits"))) \
                if rng.random() < 0.2 else None
            give_logits = rng.random() < 0.8
            expect, bad_arg = "ok", None
            labels: Any = y
            weights: Any = w
            t_logits, peer = logits.detach(), None
            if rng.random() < 0.2:
                peer = logits.detach() + torch.randn(n, self.C, generator=self.g)
            if bad in ("logits", "peer_logits"):
                give_logits = True
                bad_z = bad_logits(rng, n, self.C)
                t_logits, peer = (bad_z, peer) if bad == "logits" else (t_logits, bad_z)
                expect, bad_arg = "error", bad
            if bad == "weights":
                weights, expect, bad_arg = (w[:-1] if n else torch.ones(1),
                                            "error", "weights")
                if rng.random() < 0.3:
                    weights = w.tolist()
            elif bad == "labels":
                labels = bad_labels(rng, y, self.C, str(rng.choice(BAD_LABELS)))
                expect, bad_arg = "error", "labels"
                if isinstance(labels, torch.Tensor) and labels.shape == y.shape \
                        and not labels.dtype.is_floating_point and bool(
                            ((labels >= 0) & (labels < self.C)).all()):
                    expect = "ok"  # an empty batch stays in range
            elif bad == "other_batch" and n:
                labels = (y + 1) % self.C
                if not self.in_warmup:
                    expect = "error"
            if expect == "ok" and not self.in_warmup and (
                    self.batch is None or not torch.equal(self.batch, labels)):
                expect, bad_arg = "error", None
            until = self.options["dropped_doubt_until"]
            doubt = self.options["dropped_doubt"] is not None and (
                until is None or max(self.epoch, 0) < until)
            reads_logits = self.options["pseudo_labels"] or doubt
            if expect == "ok" and not self.in_warmup and reads_logits \
                    and not give_logits and not self.options["eval_features"]:
                expect, bad_arg = "error", "logits"
            if expect == "ok" and n == 0:
                expect = "either"
            result: dict[str, Any] = {}

            def check(t: Any) -> str | None:
                for name in ("weights", "labels", "kept", "pseudo"):
                    v = getattr(t, name, None)
                    if not isinstance(v, torch.Tensor) or tuple(v.shape) != (n,):
                        return f"targets.{name}: expected shape ({n},)"
                bad_w = check_vector(t.weights, n, low=0.0, high=self.w_max,
                                     what="target weights")
                if bad_w:
                    return bad_w
                if n and (int(t.labels.min()) < 0 or int(t.labels.max()) >= self.C):
                    return "target labels out of range"
                if t.kept.dtype != torch.bool or t.pseudo.dtype != torch.bool:
                    return "targets.kept/pseudo: expected bool"
                return None

            def call() -> Any:
                with self.context():
                    return r.targets(labels, weights, logits=t_logits if give_logits else None,
                                     peer_logits=peer)

            yield Step(f"targets({bad or 'valid'}, logits={give_logits})", call, expect=expect,
                       bad_arg=bad_arg, check=check, after=lambda t: result.update(t=t))
            if "t" in result:
                tw, tl = result["t"].weights, result["t"].labels
        bad = str(rng.choice(("weights", "labels"))) if rng.random() < 0.15 else None
        expect, bad_arg = "ok", None
        labels, weights = tl, tw
        if bad == "weights":
            weights, expect, bad_arg = torch.ones(n + 1), "error", "weights"
        elif bad == "labels":
            kind = str(rng.choice(("float", "column", "range_high", "range_low")))
            labels = bad_labels(rng, tl, self.C, kind)
            expect, bad_arg = ("error", "labels") if n else ("either", None)

        def loss_call() -> Any:
            with self.context():
                return r.loss(logits, labels, weights)

        yield Step(f"loss({bad or 'valid'}) of {n}", loss_call, expect=expect, bad_arg=bad_arg,
                   check=check_scalar, after=self._backward)
