"""`python -m visrl_bench.cli ...` (what launchers such as `accelerate launch -m` run)."""

from visrl_bench.cli import main

main()
