"""The whole FBR recipe (``SurrogateRecipe``) with the Hugging Face ``Trainer``.

Needs ``pip install -e ".[hf]"``. A tiny BERT is built from a config (random init, no
download) and trained on synthetic token ids: each class has a keyword token hidden
among random filler tokens, and 35% of the training labels are wrong. Every step of the
recipe is a ``Trainer`` step: ``RecipeTrainer.get_train_dataloader`` returns
``RecipeStream(recipe, pool_loader)``, which streams each epoch's clean-pass batches
tagged ``"clean"`` and then the pool's tagged ``"pool"``; ``compute_loss`` dispatches on
the tag (the clean mean loss, or the FBR-weighted mean of the per-sample cross entropies
with weights from the pooled features). A ``TrainerCallback`` starts the recipe's epoch:
2 warm-up epochs at weight 0.5, as the authors' recipe does.

    python examples/hf_trainer_example.py
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from robustweights import SurrogateRecipe
from robustweights.integrations import RecipeStream

NUM_CLASSES, VOCAB, LENGTH, KEYWORDS = 3, 64, 16, 4


def make_tokens(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (n, LENGTH) and their true class: class c hides its keyword token 1 + c
    at KEYWORDS random positions."""
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    ids = torch.randint(NUM_CLASSES + 1, VOCAB, (n, LENGTH), generator=g)
    ids[:, 0] = 0                                     # a [CLS]-like first token
    pos = torch.rand(n, LENGTH - 1, generator=g).argsort(1)[:, :KEYWORDS] + 1
    ids[torch.arange(n)[:, None], pos] = (1 + labels)[:, None]
    return ids, labels


class TokenDataset(torch.utils.data.Dataset):
    """The dicts the Trainer's default collator stacks into a batch."""

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class Logits(torch.nn.Module):
    """The recipe's feature model: token ids in, logits out (the pooled features, the
    input of ``classifier``, are what the recipe scores)."""

    def __init__(self, model: BertForSequenceClassification) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits


class RecipeEpoch(TrainerCallback):
    """Start the recipe's epoch (warm-up, alpha schedule) at every Trainer epoch."""

    def __init__(self, recipe: SurrogateRecipe) -> None:
        self.recipe = recipe

    def on_epoch_begin(self, args: TrainingArguments, state: Any, control: Any,
                       **kwargs: Any) -> None:
        # state.epoch is epoch + (steps done) / (steps per epoch): an integer at an
        # epoch start
        self.recipe.start_epoch(math.floor(state.epoch + 1e-6))


class RecipeTrainer(Trainer):
    """A ``Trainer`` whose epochs are the recipe's: each Trainer step is one clean-pass
    batch or one pool batch, so the Trainer's own optimizer step, AMP, clipping,
    accumulation and DDP apply to the clean passes too."""

    def __init__(self, *args: Any, recipe: SurrogateRecipe, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recipe = recipe

    def get_train_dataloader(self) -> Any:
        # The pool loader as the Trainer builds it (accelerate shards it under DDP),
        # after each epoch's clean batches; len() tells the Trainer the epoch's length.
        return RecipeStream(self.recipe, super().get_train_dataloader())

    def compute_loss(self, model: torch.nn.Module, inputs: Any,
                     return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        kind, batch = inputs
        if kind == "clean":                                   # a clean pass's batch
            ids, labels = batch
            outputs = model(input_ids=ids)
            loss = self.recipe.clean_loss(outputs.logits, labels)
        else:                                                 # a noisy pool batch
            labels = batch.pop("labels")
            outputs = model(**batch)                          # its pooled features are
            w = self.recipe.weights(inputs=batch["input_ids"],   # hooked -> the weights
                                    labels=labels, logits=outputs.logits)
            loss = self.recipe.loss(outputs.logits, labels, w)   # mean of w_i * loss_i
        return (loss, outputs) if return_outputs else loss


def make_data(seed: int = 0) -> dict[str, torch.Tensor]:
    """480 training sequences, 35% of them mislabelled; 60 clean ones; 500 test ones."""
    g = torch.Generator().manual_seed(seed)
    ids, y_true = make_tokens(480, g)
    flip = torch.rand(480, generator=g) < 0.35        # 35% of the labels are wrong
    y = torch.where(flip, (y_true + torch.randint(1, NUM_CLASSES, (480,), generator=g))
                    % NUM_CLASSES, y_true)
    clean_ids, clean_y = make_tokens(60, g)           # a small trusted clean set
    test_ids, test_y = make_tokens(500, g)
    return {"ids": ids, "y": y, "flip": flip, "clean_ids": clean_ids,
            "clean_y": clean_y, "test_ids": test_ids, "test_y": test_y}


def train(data: dict[str, torch.Tensor], epochs: int = 12,
          trainer_cls: type[RecipeTrainer] = RecipeTrainer
          ) -> tuple[BertForSequenceClassification, SurrogateRecipe, RecipeTrainer]:
    """A tiny BERT trained with the recipe for ``epochs`` on CPU."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128,
                        max_position_embeddings=LENGTH)
    config.num_labels = NUM_CLASSES
    model = BertForSequenceClassification(config)     # random init, no download
    # 2 clean passes of 2 batches per epoch; a constant learning rate has no drop for
    # alpha to switch at (alpha_switch past the run)
    recipe = SurrogateRecipe(NUM_CLASSES, model=Logits(model), head=model.classifier,
                             clean_data=(data["clean_ids"], data["clean_y"]),
                             warmup_epochs=2, alpha_switch=1000, clean_passes=2,
                             clean_batch_size=32,
                             # the plain filter on the training forward's features (the
                             # default adds targets and mixup: examples/recipe_loop.py)
                             eval_features=False, dropped_weight=0.0,
                             pseudo_labels=False,
                             generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=epochs,
                                 per_device_train_batch_size=32, learning_rate=1e-3,
                                 seed=0, lr_scheduler_type="constant",
                                 use_cpu=True, report_to=[], save_strategy="no",
                                 logging_strategy="no", disable_tqdm=True)
        trainer = trainer_cls(model=model, args=args,
                              train_dataset=TokenDataset(data["ids"], data["y"]),
                              callbacks=[RecipeEpoch(recipe)], recipe=recipe)
        trainer.train()
    return model, recipe, trainer


def main() -> None:
    data = make_data()
    model, recipe, _ = train(data)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=data["test_ids"]).logits
        accuracy = (logits.argmax(1) == data["test_y"]).float().mean().item()
        kept = recipe.directions(inputs=data["ids"],
                                 labels=data["y"]) > 0       # FBR's final kept set
    clean = ~data["flip"]
    print(f"accuracy on true labels {accuracy:.3f}; "
          f"kept {kept.float().mean():.2f} of samples, "
          f"{clean[kept].float().mean():.3f} correctly labelled "
          f"(pool {clean.float().mean():.3f})")


if __name__ == "__main__":
    main()
