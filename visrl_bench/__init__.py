"""visrl-bench: evaluation-first harness and plug-in trainers for intention-driven visual perception."""

__version__ = "0.1.0"
