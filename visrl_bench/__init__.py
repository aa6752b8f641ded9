"""visrl-bench: evaluation-first harness and plug-in trainers for intention-driven visual perception."""

from visrl_bench._compat import check_torchvision_before_transformers

__version__ = "0.1.0"

# before anything imports transformers: a broken torchvision would take its image processors down with it
check_torchvision_before_transformers()
