"""Repository-wide pytest settings: skip doctests of integrations whose framework is missing.

``--doctest-modules`` imports every module under ``robustweights/``; an integration module
imports its framework and raises ``ImportError`` without it (install the extra, e.g.
``pip install -e ".[lightning]"``).
"""

import importlib.util

collect_ignore = [
    path for path, module in [("robustweights/integrations/lightning.py", "lightning")]
    if importlib.util.find_spec(module) is None
]
