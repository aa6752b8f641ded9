"""Send what a long job's inner stages print to a log file, so the terminal keeps its progress bar and table.

The stages of a grid cell (TRL / transformers trainers, `generate`, `eval`) print library warnings, log lines
and per-step dicts. Each is written through one of three channels: `sys.stdout` / `sys.stderr` looked up at
write time (print, `warnings.showwarning`, logging's last-resort handler), a logging StreamHandler that
captured the stream object when it was configured (transformers' and datasets' own handlers), or the file
descriptors 1 and 2 themselves (C extensions, and child processes). `output_to` redirects all three; a
progress bar created before the block keeps the stream object it was given and still reaches the terminal,
unless `fds=True` is asked for, which only a worker process with no bar of its own should do. With
`prints=False` only warnings and library log lines move: a command whose own bar is made inside the block
(`train`) keeps it on the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path


def _stream_handlers(streams: tuple) -> list[logging.StreamHandler]:
    """Plain StreamHandlers (not file handlers) of every logger that write to one of `streams`."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [
        h
        for lg in loggers
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
        if type(h) is logging.StreamHandler and any(h.stream is s for s in streams)
    ]


@contextlib.contextmanager
def output_to(path: str | Path, prints: bool = True, fds: bool = False) -> Iterator[Path]:
    """While the block runs, warnings and library log lines of this process are appended to PATH; with
    `prints` also whatever goes to sys.stdout / sys.stderr (a progress bar made inside the block too)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    terminal = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    stderr = sys.stderr
    with path.open("a", buffering=1) as log, contextlib.ExitStack() as undo:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        if fds:
            for fd in (1, 2):
                saved = os.dup(fd)
                os.dup2(log.fileno(), fd)
                undo.callback(os.close, saved)
                undo.callback(os.dup2, saved, fd)
        # a handler made inside the block (a library configured late) must not keep the closed file
        undo.callback(lambda: [h.setStream(stderr) for h in _stream_handlers((log,))])
        for handler in _stream_handlers(terminal):
            undo.callback(handler.setStream, handler.stream)
            handler.setStream(log)
        shown = warnings.showwarning
        undo.callback(setattr, warnings, "showwarning", shown)
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: log.write(
            warnings.formatwarning(message, category, filename, lineno, line)
        )
        if prints:
            undo.enter_context(contextlib.redirect_stdout(log))
            undo.enter_context(contextlib.redirect_stderr(log))
        yield path
