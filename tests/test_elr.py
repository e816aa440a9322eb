"""Early-learning regularisation (``robustweights.recipe.elr``): the penalty against hand values
and its gradient against the closed form, the running targets against a literal loop, input
errors, properties, and two processes against one."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from robustweights.recipe import PredictionAverage, elr_penalty


def _probs(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    return torch.softmax(z, 1).clamp(eps, 1 - eps)


def test_penalty_hand_values() -> None:
    z = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [0.25, 0.25]])
    # <p, t> = 0.5 and 0.25
    want = torch.log(torch.tensor([0.5, 0.75]))
    torch.testing.assert_close(elr_penalty(z, t, reduction="none"), want)
    torch.testing.assert_close(elr_penalty(z, t), want.mean())
    torch.testing.assert_close(elr_penalty(z, t, reduction="sum"), want.sum())
    assert elr_penalty(z, torch.zeros(2, 2)).item() == 0.0  # no target yet: no pull


def test_penalty_gradient_is_the_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), 1) * 0.9
    elr_penalty(z, t, reduction="sum").backward()
    p = torch.softmax(z.detach(), 1)  # no entry is clipped at these logits
    assert bool(((p > 1e-4) & (p < 1 - 1e-4)).all())
    dot = (p * t).sum(1, keepdim=True)
    want = p * (dot - t) / (1 - dot)  # d/dz log(1 - <p, t>), module docstring
    torch.testing.assert_close(z.grad, want)


def test_penalty_pulls_towards_the_target() -> None:
    # CE towards a wrong label 1, the target remembering class 0: the ELR step raises p_0.
    z = torch.zeros(1, 3, requires_grad=True)
    t = torch.tensor([[0.9, 0.05, 0.05]])
    elr_penalty(z, t).backward()
    assert z.grad is not None and z.grad[0, 0] < 0 < z.grad[0, 1]


def test_penalty_keeps_the_dtype_and_is_finite_at_saturation() -> None:
    z = torch.tensor([[1e4, -1e4]], dtype=torch.float64, requires_grad=True)
    out = elr_penalty(z, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert out.dtype == torch.float64 and bool(torch.isfinite(out))
    out.backward()
    assert z.grad is not None and bool(torch.isfinite(z.grad).all())
    assert elr_penalty(torch.zeros(0, 3), torch.zeros(0, 3)).item() == 0.0


def test_update_is_the_running_average() -> None:
    avg = PredictionAverage(3, momentum=0.6)
    g = torch.Generator().manual_seed(1)
    table = torch.zeros(8, 3)
    for _ in range(4):
        ids = torch.randperm(8, generator=g)[:5]
        z = torch.randn(5, 3, generator=g) * 3
        got = avg.update(ids, z)
        p = _probs(z)
        for i, row in zip(ids.tolist(), p / p.sum(1, keepdim=True), strict=True):
            table[i] = 0.6 * table[i] + 0.4 * row
        torch.testing.assert_close(got, table[ids])
    assert avg.targets is not None and avg.targets.shape[0] == 8
    torch.testing.assert_close(avg.targets, table)


def test_update_grows_and_resets() -> None:
    avg = PredictionAverage(2, momentum=0.0)
    avg.update(torch.tensor([1]), torch.zeros(1, 2))
    out = avg.update(torch.tensor([6]), torch.tensor([[0.0, 0.0]]))
    assert avg.targets is not None and avg.targets.shape == (7, 2)
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.5]]))
    assert avg.targets[3].abs().sum() == 0  # never seen: 0
    avg.reset()
    assert avg.targets is None


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"num_classes": 1}, "num_classes"),
    ({"num_classes": 3, "momentum": 1.0}, "momentum"),
    ({"num_classes": 3, "momentum": True}, "momentum"),
    ({"num_classes": 3, "eps": 0.5}, "eps"),
])
def test_bad_configuration_is_named(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        PredictionAverage(**kwargs)


def test_bad_input_is_named() -> None:
    avg = PredictionAverage(3)
    with pytest.raises(ValueError, match="logits"):
        avg.update(torch.tensor([0]), torch.zeros(1, 2))
    with pytest.raises(TypeError, match="logits"):
        avg.update(torch.tensor([0]), [[0.0, 0.0, 0.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        avg.update(torch.tensor([0]), torch.tensor([[float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="sample_ids"):
        avg.update(torch.tensor([-1]), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="sample_ids"):
        avg.update(torch.tensor([0, 1]), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="targets"):
        elr_penalty(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(TypeError, match="logits"):
        elr_penalty([[0.0, 0.0]], torch.zeros(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="logits"):
        elr_penalty(torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="reduction"):
        elr_penalty(torch.zeros(2, 3), torch.zeros(2, 3), reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps"):
        elr_penalty(torch.zeros(2, 3), torch.zeros(2, 3), eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        elr_penalty(torch.zeros(2, 3), torch.zeros(2, 3), eps="0.1")  # type: ignore[arg-type]


def test_state_dict_refuses_another_configuration() -> None:
    avg = PredictionAverage(3, momentum=0.7)
    avg.update(torch.tensor([0, 2]), torch.randn(2, 3))
    state = avg.state_dict()
    with pytest.raises(ValueError, match="momentum"):
        PredictionAverage(3, momentum=0.9).load_state_dict(state)
    with pytest.raises(ValueError, match="num_classes"):
        PredictionAverage(4, momentum=0.7).load_state_dict(state)
    fresh = PredictionAverage(3, momentum=0.7)
    fresh.load_state_dict(state)
    assert fresh.targets is not None and avg.targets is not None
    assert torch.equal(fresh.targets, avg.targets)


logit_rows = st.lists(st.lists(st.floats(-30, 30), min_size=3, max_size=3), min_size=1,
                      max_size=6)


@settings(max_examples=60, deadline=None)
@given(logit_rows, st.floats(0.0, 0.99), st.randoms(use_true_random=False))
def test_properties(rows, momentum, rnd) -> None:
    z = torch.tensor(rows)
    n = z.shape[0]
    ids = torch.tensor(rnd.sample(range(3 * n), n))
    avg = PredictionAverage(3, momentum=momentum)
    t = avg.update(ids, z)
    # rows of the table are sub-distributions: (1 - beta^k) of a distribution
    assert bool((t >= 0).all()) and bool((t.sum(1) <= 1 + 1e-6).all())
    pen = elr_penalty(z, t, reduction="none")
    assert bool(torch.isfinite(pen).all()) and bool((pen <= 0).all())
    # permuting the batch permutes the output and leaves the table unchanged
    perm = torch.tensor(rnd.sample(range(n), n))
    other = PredictionAverage(3, momentum=momentum)
    torch.testing.assert_close(other.update(ids[perm], z[perm]), t[perm])
    assert avg.targets is not None and other.targets is not None
    torch.testing.assert_close(other.targets, avg.targets)
    # adding a constant to every logit of a row changes nothing (softmax invariance)
    torch.testing.assert_close(elr_penalty(z + 5.0, t, reduction="none"), pen, atol=1e-5,
                               rtol=1e-5)


# ------------------------------------------------------------------ two processes against one
N, C, STEPS = 20, 4, 5


def _batches():
    g = torch.Generator().manual_seed(3)
    for _ in range(STEPS):
        ids = torch.randperm(N, generator=g)[:12]
        yield ids, torch.randn(12, C, generator=g)


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    torch.set_num_threads(1)
    avg = PredictionAverage(C, momentum=0.5)
    rows = []
    for step, (ids, z) in enumerate(_batches()):
        cut = 5 if step % 2 else 8  # uneven, and a sample moves between ranks across steps
        part = slice(0, cut) if rank == 0 else slice(cut, None)
        rows.append(avg.update(ids[part], z[part]))
    torch.save({"table": avg.targets, "rows": rows}, f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_hold_the_table_of_one() -> None:
    one = PredictionAverage(C, momentum=0.5)
    whole = [one.update(ids, z) for ids, z in _batches()]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank")
        mp.spawn(_ddp_worker, args=(2, os.path.join(tmp, "init"), out), nprocs=2)
        got = [torch.load(f"{out}.{r}") for r in range(2)]
    for r in range(2):
        torch.testing.assert_close(got[r]["table"], one.targets)
    for step, rows in enumerate(whole):
        cut = 5 if step % 2 else 8
        torch.testing.assert_close(got[0]["rows"][step], rows[:cut])
        torch.testing.assert_close(got[1]["rows"][step], rows[cut:])
