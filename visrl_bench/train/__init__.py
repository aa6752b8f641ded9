"""What the trainer recipes share: training rows -> model inputs (one label-masking collator)."""
