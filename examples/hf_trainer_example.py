"""FBR with the Hugging Face ``Trainer``: per-sample weights from the model's pooled features.

Needs ``pip install "robustweights[hf]"``. A tiny BERT is built from a config (random init, no
download) and trained on synthetic token ids: each class has a keyword token hidden among
random filler tokens, and 35% of the training labels are wrong. ``FBRTrainer`` overrides
``compute_loss``: the pooled features (the classifier's input, recorded by ``FeatureCapture``)
and the labels give FBR weights, and the loss is the weighted mean of the per-sample cross
entropies, after a 2-epoch warm-up on every sample. A ``TrainerCallback`` refreshes the clean
set at every epoch start in eval mode.

    python examples/hf_trainer_example.py
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from robustweights import FeatureCapture, SurrogateReweighter, weighted_mean

NUM_CLASSES, VOCAB, LENGTH, KEYWORDS = 3, 64, 16, 4


def make_tokens(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (n, LENGTH) and their true class: class c hides its keyword token 1 + c at
    KEYWORDS random positions."""
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    ids = torch.randint(NUM_CLASSES + 1, VOCAB, (n, LENGTH), generator=g)
    ids[:, 0] = 0                                                 # a [CLS]-like first token
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


class CleanRefresh(TrainerCallback):
    """At every epoch start: the clean set's pooled features, in eval mode, into the reweighter."""

    def __init__(self, reweighter: SurrogateReweighter, capture: FeatureCapture,
                 clean_ids: torch.Tensor, clean_labels: torch.Tensor) -> None:
        self.reweighter, self.capture = reweighter, capture
        self.clean_ids, self.clean_labels = clean_ids, clean_labels

    def on_epoch_begin(self, args: TrainingArguments, state: Any, control: Any,
                       model: torch.nn.Module | None = None, **kwargs: Any) -> None:
        if model is None:
            raise ValueError("Expected the Trainer to pass `model` to its callbacks, but got None")
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(input_ids=self.clean_ids.to(device))
        self.reweighter.set_epoch(int(state.epoch or 0))
        self.reweighter.set_clean(features=self.capture.features,
                                  labels=self.clean_labels.to(device))
        model.train(was_training)


class FBRTrainer(Trainer):
    """A ``Trainer`` whose loss is the FBR-weighted mean of the per-sample cross entropies."""

    def __init__(self, *args: Any, reweighter: SurrogateReweighter, capture: FeatureCapture,
                 warmup_epochs: float = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reweighter, self.capture = reweighter, capture
        self.warmup_epochs = warmup_epochs

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                     return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        losses = F.cross_entropy(outputs.logits, labels, reduction="none")
        if (self.state.epoch or 0) < self.warmup_epochs:
            # Warm-up, as in the authors' recipe: from random features FBR's prototypes would
            # only confirm the initial network, so the first epochs train on every sample.
            return (losses.mean(), outputs) if return_outputs else losses.mean()
        w = self.reweighter.weights(features=self.capture.features, labels=labels)
        loss = weighted_mean(losses, w)
        return (loss, outputs) if return_outputs else loss


def main() -> None:
    g = torch.Generator().manual_seed(0)
    ids, y_true = make_tokens(480, g)
    flip = torch.rand(480, generator=g) < 0.35                    # 35% of the labels are wrong
    y = torch.where(flip, (y_true + torch.randint(1, NUM_CLASSES, (480,), generator=g))
                    % NUM_CLASSES, y_true)
    clean_ids, clean_y = make_tokens(60, g)                       # small trusted clean set
    test_ids, test_y = make_tokens(500, g)

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128,
                        max_position_embeddings=LENGTH)
    config.num_labels = NUM_CLASSES
    model = BertForSequenceClassification(config)                 # random init, no download
    capture = FeatureCapture(model.classifier)                    # the pooled features
    reweighter = SurrogateReweighter(num_classes=NUM_CLASSES)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=12,
                                 per_device_train_batch_size=32, learning_rate=1e-3, seed=0,
                                 lr_scheduler_type="constant",
                                 use_cpu=True, report_to=[], save_strategy="no",
                                 logging_strategy="no", disable_tqdm=True)
        trainer = FBRTrainer(model=model, args=args, train_dataset=TokenDataset(ids, y),
                             callbacks=[CleanRefresh(reweighter, capture, clean_ids, clean_y)],
                             reweighter=reweighter, capture=capture)
        trainer.train()

    model.eval()
    with torch.no_grad():
        accuracy = (model(input_ids=test_ids).logits.argmax(1) == test_y).float().mean().item()
        model(input_ids=clean_ids)
        reweighter.set_clean(features=capture.features, labels=clean_y)
        model(input_ids=ids)
        kept = reweighter.weights(features=capture.features, labels=y) > 0
    clean = ~flip
    print(f"accuracy on true labels {accuracy:.3f}; kept {kept.float().mean():.2f} of samples, "
          f"{clean[kept].float().mean():.3f} correctly labelled (pool {clean.float().mean():.3f})")


if __name__ == "__main__":
    main()
