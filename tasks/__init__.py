"""Benchmark plug-ins, installed as `visrl_bench.tasks` (never as a top-level `tasks` module).

One module per benchmark; register it in `visrl_bench.core.registry`. See CONTRIBUTING.md.
"""
