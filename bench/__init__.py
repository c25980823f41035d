"""Sternway's benchmarks: the engine against a bare Temporal SDK baseline, in one run.

``make bench`` (``python -m bench``) starts its own dev server and workers, runs every scenario
against a bare-SDK baseline on the same server, alternating rounds, and writes
``bench/results/latest.{json,md}``. ``python -m bench throughput --size tiny`` runs one scenario
small. See docs/BENCHMARKS.md.

This module stays empty of imports: the workflow sandbox re-imports ``bench._bare`` (and so this
package) for every baseline run.
"""
