"""Trainer plug-ins (SFT, DPO, step-DPO on TRL/peft), installed as `visrl_bench.trainers`.

Empty until the trainers land; register each in `visrl_bench.registry.TRAINERS`. See CONTRIBUTING.md.
"""
