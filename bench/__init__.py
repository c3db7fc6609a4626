"""On-demand benchmarks (never run by CI): ``python -m bench`` is the wrk harness, see ``bench/harness``."""
