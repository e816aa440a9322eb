"""``python -m benchmarks.micro``: see :mod:`benchmarks.micro`."""

from benchmarks.micro.cli import main

main()
