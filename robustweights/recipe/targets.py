r"""What the recipe gives a pool batch beyond its weights: a training target for every sample,
including the ones the filter drops, and the loss helpers that train on those targets.

A filter that discards what it drops throws away about a fifth of the correctly labelled
images (its recall is the nearest-prototype accuracy). :class:`Targets` keeps them: a dropped
sample whose given label is probably wrong trains towards a *pseudo-label* where two
independent views of it agree (the nearest clean prototype and the network's prediction, and a
peer network's if there is one) and the network is confident; the others get weight 0.

Everything here is a pure function of one batch: nothing is stored, nothing steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from robustweights._validation import check_fraction, check_positive_float
from robustweights.functional.surrogate import surrogate_prototypes, surrogate_scaled_similarity
from robustweights.losses import weighted_mean

__all__ = ["Targets", "agreement_pseudo_labels", "bootstrap_targets", "consistency_loss",
           "doubt_gate", "mixup", "nearest_prototype", "prior_penalty", "pseudo_label_targets",
           "soft_cross_entropy"]


@dataclass(frozen=True)
class Targets:
    r"""The training targets of one pool batch (every field has shape (B,)).

    The supervised loss of the batch is :math:`\frac1B\sum_i w_i\,\ell(z_i, q_i)` with
    ``weights`` :math:`w` and the target :math:`q_i = (1-\beta_i)\,e_{t_i} + \beta_i\,e_{g_i}`
    (:meth:`soft_targets`): ``labels`` :math:`t`, and for a bootstrapped sample the network's
    guess :math:`g_i` with share :math:`\beta_i` (``guess_share``; 0 elsewhere, so that
    :math:`q_i = e_{t_i}`). A sample the filter keeps trains towards its given label, an accepted
    dropped sample towards its pseudo-label at the pseudo-label weight, the rest at the weight
    of a dropped sample, towards their given label or its bootstrapped mix.

    Attributes:
        weights: :math:`w_i` (detached).
        labels: :math:`t_i`: the given label, or the pseudo-label where ``pseudo`` is True.
        kept: whether the filter kept the sample under its given label.
        pseudo: whether the sample was dropped and its pseudo-label accepted.
        guess: :math:`g_i`, the network's class for the sample (its given label where
            ``guess_share`` is 0).
        guess_share: :math:`\beta_i \in [0, 1]`, the share of the target on the guess.
    """

    weights: torch.Tensor
    labels: torch.Tensor
    kept: torch.Tensor
    pseudo: torch.Tensor
    guess: torch.Tensor | None = None
    guess_share: torch.Tensor | None = None

    def soft_targets(self, num_classes: int) -> torch.Tensor:
        r"""The targets :math:`q` (B, C) as distributions: one-hot at ``labels`` unless
        bootstrapped.

        Example:
            >>> t = Targets(torch.ones(2), torch.tensor([0, 1]), torch.tensor([True, False]),
            ...             torch.tensor([False, False]), torch.tensor([0, 2]),
            ...             torch.tensor([0.0, 0.75]))
            >>> t.soft_targets(3)
            tensor([[1.0000, 0.0000, 0.0000],
                    [0.0000, 0.2500, 0.7500]])
        """
        q = F.one_hot(self.labels.long(), num_classes).to(torch.float32)
        if self.guess is None or self.guess_share is None:
            return q
        b = self.guess_share.detach().to(torch.float32, copy=False)[:, None]
        return (1 - b) * q + b * F.one_hot(self.guess.long(), num_classes).to(torch.float32)


def nearest_prototype(features: torch.Tensor, class_sums: torch.Tensor,
                      class_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The class of each sample's most similar centred clean prototype,
    :math:`\arg\max_{c \in \mathcal P} \langle f_i - \mu, P_c\rangle` over the classes
    :math:`\mathcal P` present in the clean set (FBR's similarity, steps 1-2), and the
    present-class mask (C,).

    Example:
        >>> sums = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
        >>> nearest_prototype(torch.tensor([[1.0, 0.1], [0.0, 3.0]]), sums,
        ...                   torch.tensor([2.0, 2.0, 0.0]))
        (tensor([0, 1]), tensor([ True,  True, False]))
    """
    mu, protos, present = surrogate_prototypes(class_sums, class_counts)
    dev = features.device
    sim = surrogate_scaled_similarity(features, mu.to(dev), protos.to(dev))[0]
    return sim.masked_fill(~present.to(sim.device), float("-inf")).argmax(1), present


def agreement_pseudo_labels(prototype_class: torch.Tensor, logits: torch.Tensor, *,
                            confidence: float = 0.0,
                            peer_logits: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Pseudo-labels accepted only where independent views agree.

    .. math::
        \hat y_i = \arg\max_c P_{ic}, \qquad
        \text{accept}_i = [\hat y_i = \arg\max_c z_{ic}]
        \wedge [\max_c \mathrm{softmax}(z_i)_c \ge \kappa]
        \wedge [\hat y_i = \arg\max_c z'_{ic}]

    with :math:`P` the nearest-prototype class scores (only the class is given here), :math:`z`
    the network's logits, :math:`z'` a peer's (the last term only with ``peer_logits``) and
    :math:`\kappa` = ``confidence``.

    Args:
        prototype_class: (B,) the class of each sample's nearest clean prototype.
        logits: (B, C) the network's logits of the same images (detached by the caller).
        confidence: :math:`\kappa` in [0, 1], the least softmax probability of the network's class.
        peer_logits: (B, C) a second network's logits, or None.

    Returns:
        ``(pseudo_labels, accepted)``: the prototype class (B,) and the mask (B,).

    Example:
        >>> z = torch.tensor([[4.0, 0.0], [0.0, 0.1], [0.0, 4.0]])
        >>> agreement_pseudo_labels(torch.tensor([0, 1, 0]), z, confidence=0.9)
        (tensor([0, 1, 0]), tensor([ True, False, False]))
    """
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"Expected `confidence` to be in [0, 1], but got {confidence!r}")
    if logits.ndim != 2 or logits.shape[0] != prototype_class.shape[0]:
        raise ValueError(f"Expected `logits` of shape ({prototype_class.shape[0]}, C), but got "
                         f"{tuple(logits.shape)}")
    prob = torch.softmax(logits.detach().float(), 1)
    top_p, top = prob.max(1)
    accept = (top == prototype_class) & (top_p >= confidence)
    if peer_logits is not None:
        if peer_logits.shape != logits.shape:
            raise ValueError(f"Expected `peer_logits` of shape {tuple(logits.shape)}, but got "
                             f"{tuple(peer_logits.shape)}")
        accept &= peer_logits.detach().argmax(1) == prototype_class
    return prototype_class, accept


def pseudo_label_targets(weights: torch.Tensor, labels: torch.Tensor, kept: torch.Tensor,
                         features: torch.Tensor, class_sums: torch.Tensor,
                         class_counts: torch.Tensor, logits: torch.Tensor, *, confidence: float,
                         weight: float, peer_logits: torch.Tensor | None = None) -> Targets:
    r"""The :class:`Targets` of a batch whose dropped samples (``~kept``) take the class of
    their nearest clean prototype (:func:`nearest_prototype` of ``features``) where
    :func:`agreement_pseudo_labels` accepts it, at weight ``weight``; every other sample keeps
    its weight and given label. A sample whose given class has no clean sample is never
    relabelled."""
    dev = weights.device
    nearest, present = nearest_prototype(features, class_sums, class_counts)
    pseudo, accept = agreement_pseudo_labels(
        nearest.to(dev), logits.to(dev), confidence=confidence,
        peer_logits=None if peer_logits is None else peer_logits.to(dev))
    accept &= ~kept & present.to(dev)[labels]
    return Targets(torch.where(accept, torch.full_like(weights, weight), weights),
                   torch.where(accept, pseudo, labels), kept, accept)


def bootstrap_targets(targets: Targets, logits: torch.Tensor, *, share: float) -> Targets:
    r"""Hard bootstrapping of the dropped samples (Reed et al., 2015; with mixup, Arazo et al.,
    ICML 2019): a sample the filter dropped and no pseudo-label took trains towards
    :math:`(1-\beta)\,e_{y_i} + \beta\,e_{g_i}`, :math:`g_i = \arg\max_c z_{ic}` the network's
    class and :math:`\beta` = ``share``. Where the network has learnt a wrongly labelled image's
    class the target moves towards it; where it agrees with the given label the target is that
    label. Weights unchanged. Pure.

    Example:
        >>> t = Targets(torch.tensor([1.0, 0.5]), torch.tensor([0, 1]),
        ...             torch.tensor([True, False]), torch.tensor([False, False]))
        >>> b = bootstrap_targets(t, torch.tensor([[0.0, 3.0], [2.0, 0.0]]), share=0.8)
        >>> b.guess, b.guess_share
        (tensor([0, 0]), tensor([0.0000, 0.8000]))
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"Expected `share` to be in [0, 1], but got {share!r}")
    labels = targets.labels
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"Expected `logits` of shape ({labels.shape[0]}, C), but got "
                         f"{tuple(logits.shape)}")
    on = ~targets.kept.to(labels.device) & ~targets.pseudo.to(labels.device)
    guess = torch.where(on, logits.detach().argmax(1).to(labels.device), labels)
    share_t = torch.where(on, share, 0.0).to(targets.weights.device, torch.float32)
    return Targets(targets.weights, labels, targets.kept, targets.pseudo, guess, share_t)


def doubt_gate(targets: Targets, logits: torch.Tensor, *, bar: float) -> Targets:
    r"""Weight 0 for every dropped sample that no pseudo-label took and whose given label the
    network doubts:

    .. math::
        w_i \leftarrow 0 \quad\text{where}\quad \neg\,\mathrm{kept}_i \wedge
        \neg\,\mathrm{pseudo}_i \wedge \max_{c \ne y_i} \mathrm{softmax}(z_i)_c \ge b

    with :math:`y_i` the sample's label (``targets.labels``), :math:`z` the network's logits of
    the un-mixed batch (detached) and :math:`b` = ``bar``. Every other weight and every label is
    unchanged. A dropped sample that the network still assigns to another class with confidence
    is, where the network memorises its training labels, mostly a wrong label it has not
    memorised yet; where it underfits, as often a correct label it has not learnt yet. Pure.

    Example:
        >>> t = Targets(torch.tensor([1.0, 0.5, 0.5]), torch.tensor([0, 0, 0]),
        ...             torch.tensor([True, False, False]), torch.tensor([False, False, False]))
        >>> z = torch.tensor([[-3.0, 3.0], [-3.0, 3.0], [0.0, 0.0]])  # P(class 1): .998 .998 .5
        >>> doubt_gate(t, z, bar=0.7).weights
        tensor([1.0000, 0.0000, 0.5000])
    """
    check_fraction(bar, "bar")
    labels = targets.labels
    _check_float_logits(logits)
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"Expected `logits` of shape ({labels.shape[0]}, C), but got "
                         f"{tuple(logits.shape)}")
    if labels.numel() and int(labels.max()) >= logits.shape[1]:
        raise ValueError(f"Expected `logits` with a column for every label (C > "
                         f"{int(labels.max())}), but got {logits.shape[1]} columns")
    prob = torch.softmax(logits.detach().float(), 1)
    others = prob.scatter(1, labels.to(prob.device).long()[:, None], 0.0)
    dev = targets.weights.device
    doubt = others.max(1).values.to(dev) >= bar
    gate = doubt & ~targets.kept.to(dev) & ~targets.pseudo.to(dev)
    return replace(targets, weights=torch.where(gate, torch.zeros_like(targets.weights),
                                                targets.weights))


def mixup(inputs: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *,
          num_classes: int, alpha: float = 1.0, generator: torch.Generator | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Mixup among the samples of one batch (Zhang et al., ICLR 2018), weights mixed alike.

    .. math::
        \lambda \sim \mathrm{Beta}(\alpha, \alpha), \quad \pi \text{ a random permutation},\quad
        \tilde x_i = \lambda x_i + (1-\lambda) x_{\pi(i)},\quad
        \tilde q_i = \lambda e_{t_i} + (1-\lambda) e_{t_{\pi(i)}},\quad
        \tilde w_i = \lambda w_i + (1-\lambda) w_{\pi(i)}

    Train with :func:`soft_cross_entropy` ``(model(x̃), q̃, w̃)``. A pair whose samples both
    have weight 0 keeps weight 0, so mixup never trains a dropped sample's given label. Soft
    targets (B, C) in place of ``labels`` are mixed alike (:math:`e_{t_i}` replaced by
    :math:`q_i`, e.g. :meth:`Targets.soft_targets`).

    Args:
        inputs: (B, ...) the batch as the training forward gets it.
        labels: (B,) the targets' classes (e.g. :attr:`Targets.labels`), or (B, C) soft
            targets.
        weights: (B,) their weights (e.g. :attr:`Targets.weights`).
        num_classes: :math:`C`.
        alpha: :math:`\alpha > 0` of the Beta distribution.
        generator: the random source of :math:`\lambda` and :math:`\pi` (CPU).

    Returns:
        ``(mixed_inputs, soft_targets (B, C), mixed_weights (B,))``.
    """
    if not alpha > 0:
        raise ValueError(f"Expected `alpha` to be > 0, but got {alpha!r}")
    n = labels.shape[0]
    if inputs.shape[0] != n or weights.shape != (n,):
        raise ValueError(f"Expected `inputs`, `labels` and `weights` with {n} samples, but got "
                         f"{inputs.shape[0]}, {n} and {tuple(weights.shape)}")
    if labels.ndim not in (1, 2) or (labels.ndim == 2 and labels.shape[1] != num_classes):
        raise ValueError(f"Expected `labels` of shape ({n},) or ({n}, {num_classes}), but got "
                         f"{tuple(labels.shape)}")
    lam = float(torch.distributions.Beta(alpha, alpha).sample() if generator is None
                else _beta(alpha, generator))
    perm = torch.randperm(n, generator=generator).to(inputs.device)
    onehot = (labels.to(torch.float32) if labels.ndim == 2
              else F.one_hot(labels.long(), num_classes).to(torch.float32))
    w = weights.detach().to(torch.float32)
    mixed = lam * inputs + (1 - lam) * inputs[perm]
    return mixed, lam * onehot + (1 - lam) * onehot[perm], lam * w + (1 - lam) * w[perm]


def _beta(alpha: float, generator: torch.Generator) -> torch.Tensor:
    """A Beta(alpha, alpha) draw from ``generator`` (the ratio of two Gamma draws)."""
    a = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
    return a[0] / a.sum()


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    r"""The weighted batch mean of cross-entropy against soft targets,
    :math:`\frac1B\sum_i w_i \bigl(-\sum_c q_{ic}\log\mathrm{softmax}(z_i)_c\bigr)`, weights
    detached (all 1 when None). Pure: no state. An empty batch gives 0.

    Example:
        >>> z = torch.zeros(2, 2); q = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
        >>> float(soft_cross_entropy(z, q, torch.tensor([1.0, 0.0])))  # ln 2 / 2
        0.3465...
    """
    if soft_targets.shape != logits.shape:
        raise ValueError(f"Expected `soft_targets` of shape {tuple(logits.shape)}, but got "
                         f"{tuple(soft_targets.shape)}")
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    per = -(soft_targets.to(logits.dtype) * torch.log_softmax(logits, 1)).sum(1)
    if weights is None:
        return per.mean()
    if weights.shape != per.shape:
        raise ValueError(f"Expected `weights` of shape {tuple(per.shape)}, but got "
                         f"{tuple(weights.shape)}")
    return (weights.detach().to(per.dtype) * per).mean()


def consistency_loss(logits: torch.Tensor, target_logits: torch.Tensor,
                     weights: torch.Tensor | None = None, *,
                     temperature: float = 0.5) -> torch.Tensor:
    r"""The consistency term over samples whose labels are not trusted: the weighted batch mean
    of :math:`\lVert \mathrm{softmax}(z_i) - q_i \rVert_2^2` with
    :math:`q_i = \mathrm{softmax}(z'_i / T)` from ``target_logits`` :math:`z'` (detached: the
    network's own guess, typically from another view of the same image, e.g. the recipe's
    eval forward), sharpened by the temperature :math:`T` (MixMatch, Berthelot et al. 2019;
    DivideMix, Li et al. 2020). It trains the dropped samples without their labels: weight it
    by :math:`\lambda` and ramp :math:`\lambda` up over the first epochs. Towards the network's
    own guess alone the term has a fixed point where every guess is one class: in the CIFAR-N
    benchmark, at :math:`\lambda = 2.5` over the dropped half of each batch from the first
    epoch, the network collapsed onto one class (DivideMix keeps the batch's mean prediction
    near the uniform prior for this). Weights detached (all 1 when None). Pure: no state. An
    empty batch gives 0.

    Example:
        >>> z = torch.zeros(1, 2); zt = torch.tensor([[0.0, 100.0]])
        >>> float(consistency_loss(z, zt))  # (0.5 - 0)^2 + (0.5 - 1)^2
        0.5
    """
    _check_float_logits(logits)
    if not isinstance(target_logits, torch.Tensor) or target_logits.shape != logits.shape:
        raise ValueError(f"Expected `target_logits` of shape {tuple(logits.shape)}, but got "
                         f"{getattr(target_logits, 'shape', type(target_logits).__name__)}")
    check_positive_float(temperature, "temperature")
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    q = torch.softmax(target_logits.detach().to(logits.dtype) / float(temperature), 1)
    per = (torch.softmax(logits, 1) - q).pow(2).sum(1)
    return per.mean() if weights is None else weighted_mean(per, weights)


def prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    r"""The batch's mean prediction kept near the uniform prior:
    :math:`\sum_c \pi_c \log(\pi_c / \bar p_c)` with :math:`\pi_c = 1/C` and
    :math:`\bar p = \frac1B\sum_i \mathrm{softmax}(z_i)` (Tanaka et al. 2018, as DivideMix adds
    it), the KL divergence from the prior to the mean prediction: 0 when the batch's predictions
    average to uniform, large when they all fall on one class: a guard against the one-class
    fixed point of :func:`consistency_loss`. Pure: no state. An empty batch gives 0.

    Example:
        >>> float(prior_penalty(torch.tensor([[0.0, 0.0], [3.0, -3.0], [-3.0, 3.0]])))
        0.0
    """
    _check_float_logits(logits)
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    c = logits.shape[1]
    mean = torch.softmax(logits, 1).mean(0)
    return (torch.log(torch.tensor(1.0 / c, dtype=mean.dtype, device=mean.device))
            - torch.log(mean)).mean()


def _check_float_logits(logits: object) -> None:
    """``logits``: a floating (B, C) tensor with C >= 1; a named error otherwise."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"Expected `logits` to be a (B, C) tensor, but got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    if not logits.is_floating_point():
        raise TypeError(f"Expected `logits` to be a floating tensor, but got {logits.dtype}")
