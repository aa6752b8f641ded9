"""The house's foundations: boxes, errors, file I/O, run directories, the config loader, the registry."""
