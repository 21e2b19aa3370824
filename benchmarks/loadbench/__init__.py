"""The benchmark harness of stevedore-server: ``make bench`` (see benchmarks/README.md).

Standard library only: it runs on the machine's own Python and installs each
server it measures into a virtual environment of its own.
"""
