"""`python -m streams.cli`: how the demo, the benchmarks and the tests start the joiner and the worker."""

from streams.cli import main

main()
