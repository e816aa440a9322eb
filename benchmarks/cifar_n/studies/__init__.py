"""One-off studies built on the CIFAR-N benchmark's records, each a command
(``python -m benchmarks.cifar_n.studies.<name>``); the suite itself is :mod:`benchmarks.cifar_n`.

- :mod:`~benchmarks.cifar_n.studies.preset_search`: how the ``memorise`` preset was chosen;
- :mod:`~benchmarks.cifar_n.studies.fbr_selection`: the staged selection of FBR+'s configuration;
- :mod:`~benchmarks.cifar_n.studies.filter_health`: when a filter collapses, and the label-free
  signal that sees it;
- :mod:`~benchmarks.cifar_n.studies.kept_by_class`: per-class kept precision and recall;
- :mod:`~benchmarks.cifar_n.studies.cost_accuracy`: accuracy against CPU cost.
"""
