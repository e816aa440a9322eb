"""Optional integrations with training frameworks.

Each framework's submodule imports its framework when it is imported, and says which extra to
install when the framework is missing (``pip install "robustweights[lightning]"``). Nothing here
is imported by ``import robustweights``.

- :class:`~robustweights.integrations.stream.RecipeStream` (torch only): one epoch of a
  :class:`~robustweights.SurrogateRecipe`, clean passes included, as a re-iterable, sized train
  loader whose batches are tagged ``"clean"`` or ``"pool"``; what a framework's loop iterates so
  that every clean step is one of its own training steps.
- :mod:`robustweights.integrations.lightning`: ``RecipeCallback`` and ``RecipeDataLoader`` (the
  whole recipe in PyTorch Lightning), ``ReweighterCallback`` (a bare reweighter).
"""

from robustweights.integrations.stream import RecipeStream

__all__ = ["RecipeStream"]
