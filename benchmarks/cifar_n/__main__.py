"""``python -m benchmarks.cifar_n``: the benchmark command (:mod:`benchmarks.cifar_n.cli`)."""

from benchmarks.cifar_n.cli import main

raise SystemExit(main())
