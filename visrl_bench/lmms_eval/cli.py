"""`visrl-bench lmms-eval`: lmms-eval's own CLI, with an exit status that can be trusted.

lmms-eval 0.7's `cli_evaluate` runs each evaluation inside `try: ... except Exception`: it prints the
traceback, logs "Error during evaluation" and carries on, so the process exits 0 whether the model failed to
load, a task's code raised, or a dependency broke inside `simple_evaluate` (filelock 4.3 did exactly that).
A script or CI job that trusts the exit status then reports success with no results. We wrap the function it
calls per evaluation, remember what escaped from it, and turn that into exit status 1 and one final line.
"""

from __future__ import annotations

import sys

from visrl_bench.core.errors import VisrlError


def run(argv: list[str]) -> int:
    """Run `lmms-eval ARGV...`; 1 (and one line on stderr) when any evaluation raised, else its status."""
    import lmms_eval.__main__ as lmms_main
    from lmms_eval.cli.dispatch import main as dispatch

    evaluate_one = getattr(lmms_main, "cli_evaluate_single", None)
    if evaluate_one is None:  # a layout we have not checked: refuse rather than trust exit 0
        raise VisrlError(
            "this lmms-eval has no lmms_eval.__main__.cli_evaluate_single; visrl-bench cannot tell whether "
            "its evaluation failed (tested with lmms-eval 0.7.3, see requirements/lock-cpu.txt)"
        )
    failures: list[BaseException] = []

    def recorded(*args, **kwargs):
        try:
            return evaluate_one(*args, **kwargs)
        except Exception as exc:
            failures.append(exc)
            raise  # lmms-eval still prints its traceback and log line

    lmms_main.cli_evaluate_single = recorded
    sys.argv = ["lmms-eval", *argv]
    try:
        status = dispatch()
    finally:
        lmms_main.cli_evaluate_single = evaluate_one
    if failures:
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        print(f"error: lmms-eval evaluation failed{more}: {type(first).__name__}: {first}", file=sys.stderr)
        return 1
    return int(status or 0)
