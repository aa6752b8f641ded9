"""Trainer plug-ins, installed as `visrl_bench.trainers`: `pretrain` (the tiny ZoomWorld bases), `sft`,
`dpo` (trajectory-level), `step_dpo` and `visrl` (the whole loop), on TRL and peft. Each is registered in
`visrl_bench.core.registry.TRAINERS`; CONTRIBUTING.md says how to add one.
"""
