"""The lmms-eval integration: the `visrl_cot` model plug-in, task export, and its command line."""
