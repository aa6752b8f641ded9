"""Data generators: ZoomWorld now; the self-evolution (preference pair) generator later."""
