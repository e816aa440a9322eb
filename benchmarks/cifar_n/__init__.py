"""The CIFAR-N label-noise benchmark: one package, one concept a module.

- :mod:`~benchmarks.cifar_n.cli`: the command (``python -m benchmarks.cifar_n``);
- :mod:`~benchmarks.cifar_n.presets`: the named configurations (``smoke``, ``cpu``, ``paper``);
- :mod:`~benchmarks.cifar_n.data`, :mod:`~benchmarks.cifar_n.augment`,
  :mod:`~benchmarks.cifar_n.models`: images and labels, augmentation, backbones;
- :mod:`~benchmarks.cifar_n.methods`: the methods, one module each;
- :mod:`~benchmarks.cifar_n.runner`: one (method, noise, seed) run and its scores;
- :mod:`~benchmarks.cifar_n.report`: tables and plots from the records;
- :mod:`~benchmarks.cifar_n.studies`: one-off studies built on the records (preset search, FBR
  selection, filter health, kept by class, cost against accuracy), each a command
  (``python -m benchmarks.cifar_n.studies.<name>``).
"""
