"""Data generators: ZoomWorld (`zoomworld`) and the self-evolution preference pairs (`pairs`)."""
