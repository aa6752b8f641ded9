"""`output_to`: in a fresh process (as an ablation worker is), what stages print goes to the block's log and
the terminal gets it back afterwards, through two blocks in a row (a worker's second lane) and with
`prints=False` (`train`, whose progress bar stays on the terminal)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_output_to_sends_each_channel_to_the_log_and_gives_the_terminal_back(tmp_path):
    code = textwrap.dedent(
        f"""
        import logging, os, warnings
        from pathlib import Path
        from visrl_bench.core.logs import output_to
        root = Path({str(tmp_path)!r})
        with output_to(root / "lane1.log", fds=True):
            from transformers.utils import logging as hf_logging  # first imported inside, as in a lane
            hf = hf_logging.get_logger("transformers.stage")
            hf.warning("hf line 1")
            print("print 1")
            warnings.warn("warning 1", FutureWarning)
            logging.getLogger("trl.stage").warning("trl line 1")
            os.write(2, b"fd line 1\\n")
        with output_to(root / "lane2.log", fds=True):  # a second lane in the same worker
            hf.warning("hf line 2")
            print("print 2")
        with output_to(root / "train.log", prints=False):
            print("print 3 on the terminal")
            hf.warning("hf line 3")
            warnings.warn("warning 3", UserWarning)
        print("print after")
        hf.warning("hf after")
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lane1, lane2, train = ((tmp_path / f).read_text() for f in ("lane1.log", "lane2.log", "train.log"))
    for text in ("hf line 1", "print 1", "FutureWarning: warning 1", "trl line 1", "fd line 1"):
        assert text in lane1, (text, lane1)
    assert "hf line 2" in lane2 and "print 2" in lane2 and "line 1" not in lane2, lane2
    assert "hf line 3" in train and "UserWarning: warning 3" in train and "print 3" not in train, train
    assert run.stdout.splitlines() == ["print 3 on the terminal", "print after"], run.stdout
    assert run.stderr.strip().splitlines() == ["[transformers] hf after"], run.stderr
