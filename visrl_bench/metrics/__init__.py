"""Metrics: VQA accuracy (`vqa`), option letters and order (`choice`), and every confidence interval and
paired test (`stats`). Box IoU and box parsing live in `visrl_bench.core.boxes`."""
