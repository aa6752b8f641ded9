"""Experiments built from eval, datagen and the trainers: the ablation grid, ZoomWorld baselines."""
