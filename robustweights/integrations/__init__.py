"""Optional integrations with training frameworks.

Each submodule imports its framework when it is imported, and says which extra to install when
the framework is missing (``pip install "robustweights[lightning]"``). Nothing here is imported
by ``import robustweights``.

- :mod:`robustweights.integrations.lightning`: ``ReweighterCallback`` for PyTorch Lightning.
"""
