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
import importlib
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

# libraries that attach their own stderr handler on first use; transformers also pins that handler's `flush`
# to the `sys.stderr.flush` of that moment. Set up before a block, they are redirected like any handler,
# instead of being born inside it (holding the log file) or after it started (writing to the terminal).
_SELF_CONFIGURING = ("transformers.utils.logging", "datasets.utils.logging", "huggingface_hub.utils.logging")


def _configure_library_loggers() -> None:
    for name in _SELF_CONFIGURING:
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            importlib.import_module(name).get_verbosity()


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


def _release(log, stderr) -> None:
    """Handlers made inside the block that still hold the log file write to stderr after it."""
    for handler in _stream_handlers((log,)):
        handler.setStream(stderr)
        if getattr(handler.__dict__.get("flush"), "__self__", None) is log:
            del handler.flush  # transformers' own handler: back to StreamHandler.flush


@contextlib.contextmanager
def output_to(path: str | Path, prints: bool = True, fds: bool = False) -> Iterator[Path]:
    """While the block runs, warnings and library log lines of this process are appended to PATH; with
    `prints` also whatever goes to sys.stdout / sys.stderr (a progress bar made inside the block too)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _configure_library_loggers()
    terminal = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    stderr = sys.stderr
    with path.open("a", buffering=1) as log, contextlib.ExitStack() as undo:
        for stream in terminal:
            if stream is not None:
                stream.flush()
        if fds:
            for fd in (1, 2):
                saved = os.dup(fd)
                os.dup2(log.fileno(), fd)
                undo.callback(os.close, saved)
                undo.callback(os.dup2, saved, fd)
            # what C code or the interpreter buffered for fd 1 / 2 during the block belongs in the log
            undo.callback(lambda: [s.flush() for s in (sys.__stdout__, sys.__stderr__) if s is not None])
        undo.callback(_release, log, stderr)
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
