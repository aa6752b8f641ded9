"""Metrics: VQA accuracy, option accuracy, box metrics, and the statistics around them."""
