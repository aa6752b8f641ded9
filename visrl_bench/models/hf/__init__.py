"""transformers-backed adapters: `base` (what they share) and one module per architecture (its adapter,
tiny-model hook and shrink rule). Adding an architecture is one module here plus one line in
`visrl_bench.core.registry`."""
