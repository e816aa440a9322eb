"""SurrogateRecipe driven by the caller's loop equals the old trainer-style recipe bit for bit.

The old recipe (``tests/reference_recipe.py``, the code before the recipe became composable
steps) ran its own clean passes with ``zero_grad / backward / step`` and a hard-coded
cross-entropy. On the benchmark's setting (its CNN with BatchNorm, crop + flip on the pool
batches, un-augmented clean passes, eval-mode features, warm-up then the alpha switch), the new
loop must give the same weights for every batch and the same parameters after every epoch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.cifar_n.augment import crop_flip, normalize
from benchmarks.cifar_n.models import build_model, head
from robustweights import RecipeConfig, SurrogateRecipe
from tests.reference_recipe import TrainerRecipe

C, N_POOL, N_CLEAN, BATCH, EPOCHS = 10, 96, 40, 32, 4


def _data() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    pool = normalize(torch.randint(0, 256, (N_POOL, 32, 32, 3), generator=g, dtype=torch.uint8))
    clean = normalize(torch.randint(0, 256, (N_CLEAN, 32, 32, 3), generator=g,
                                    dtype=torch.uint8))
    return pool, torch.randint(0, C, (N_POOL,), generator=g), clean, torch.arange(N_CLEAN) % C


def _model() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model("cnn", C, 4)


def _run(new: bool, **options: float) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    pool_x, pool_y, clean_x, clean_y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    schedule = {"warmup_epochs": 1, "alpha_switch": 2, "clean_passes": 2,
                "clean_batch_size": BATCH, **options}
    gen = torch.Generator().manual_seed(7919)
    if new:
        recipe: object = SurrogateRecipe(C, config=RecipeConfig.authors(), model=model,
                                         head=head(model),
                                         clean_data=(clean_x, clean_y), generator=gen,
                                         **schedule)  # type: ignore[arg-type]
    else:
        recipe = TrainerRecipe(model, head=head(model), clean_inputs=clean_x,
                               clean_labels=clean_y, optimizer=opt, num_classes=C,
                               generator=gen, **schedule)  # type: ignore[arg-type]
    order, aug = torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)
    weights, params = [], []
    for epoch in range(EPOCHS):
        model.train()
        recipe.start_epoch(epoch)  # type: ignore[attr-defined]
        if new:
            for xc, yc in recipe.clean_batches():  # type: ignore[attr-defined]
                opt.zero_grad(set_to_none=True)
                recipe.clean_loss(model(xc), yc).backward()  # type: ignore[attr-defined]
                opt.step()
        for idx in torch.randperm(N_POOL, generator=order).split(BATCH):
            x, y = crop_flip(pool_x[idx], generator=aug), pool_y[idx]
            if new:
                w = recipe.weights(inputs=x, labels=y, sample_ids=idx)  # type: ignore[attr-defined]
                loss = recipe.loss(model(x), y, w)  # type: ignore[attr-defined]
            else:
                loss = recipe.loss(x, y, sample_ids=idx)  # type: ignore[attr-defined]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            weights.append(recipe.last_weights.clone())  # type: ignore[attr-defined]
        params.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return weights, params


@pytest.mark.parametrize("options", [
    {"dropped_weight": 0.0},                        # the authors' recipe
    {"dropped_weight": 0.3},                        # FBR+
    {"dropped_weight": 0.0, "smoothing": 0.9},
], ids=["authors", "dropped_weight", "smoothing"])
def test_new_loop_equals_old_recipe_bit_for_bit(options: dict[str, float]) -> None:
    w_old, p_old = _run(False, **options)
    w_new, p_new = _run(True, **options)
    assert len(w_old) == len(w_new) == EPOCHS * 3
    for a, b in zip(w_old, w_new, strict=True):
        assert torch.equal(a, b)
    assert any(bool((w == 0).any()) or bool((w < 1).any()) for w in w_new[3:]), \
        "the weights after the warm-up are not all 1: the filter ran"
    for a, b in zip(p_old, p_new, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
