"""The wrk benchmark harness behind ``make bench`` (``python -m bench``); see ``bench/__main__.py`` for the options.

A run, in order (each step is one module):

1. ``database``: the bench database of the scale (``conduit_bench_10k``, ``conduit_bench_1m``) is created, migrated
   and seeded with ``service seed`` if needed, else migrated; then ``VACUUM ANALYZE``. Test data (slugs, authors,
   favoriters, tags, users to log in) is read from it.
2. ``processes``: the service and the ceiling start as production runs them (uvicorn, two workers each, the same
   database and pool size), and are always stopped at the end, also on Ctrl-C or an error.
3. ``cases``: the requests of each case, written to data files for ``bench/lua/requests.lua``; the write mix is
   ``bench/lua/writes.lua``.
4. ``run``: per case and round, a warm-up and a measurement with ``wrk`` (``wrk`` parses its output) on each side,
   alternating which side goes first; ``memory`` samples the workers' RSS after every case, and runs the soak.
5. ``report``: ``bench/results/<UTC time>-<scale>/results.{json,md}`` and ``chart.png``, copied to
   ``bench/results/latest-<scale>.*``.
"""
