"""`visrl-bench ablate`: the paper's table — every configuration x every base LMM (x seeds), one cell each.

A cell is an eval run dir (results.json + samples.jsonl + cell.json) under OUT/cells/<row>/<base>/seed<s>.
Cells that start from the same model share its work. Per (base, seed) "lane", under OUT/shared/<base>/seed<s>:
the SFT warm-up and the SFT on more data are trained once; generated samples are cached by what drew them
(policy, sampling settings, seed), generated with the difficulty filter off and filtered afterwards, so
`visrl`, `wo_step_level`, `wo_filter` and `swapped_labels` train on pairs from the same samples.

A rerun skips finished cells (a cell is finished once its cell.json is written, after its results.json) and
resumes stages inside an unfinished one; a cell that fails writes error.json and the grid goes on.
"""

from visrl_bench.experiments.ablation.findings import findings_markdown, verdict, write_leaderboard
from visrl_bench.experiments.ablation.grid import ensure_data, run_ablation, run_lane
from visrl_bench.experiments.ablation.lane import Lane, portable
from visrl_bench.experiments.ablation.spec import (
    CELL_FILE,
    CONFIG_FILE,
    ERROR_FILE,
    FINDINGS,
    GRPO_ROWS,
    PRESETS,
    REFERENCE_ROW,
    ROW_BY_NAME,
    ROWS,
    AblationConfig,
    Row,
    load_ablation_config,
)

__all__ = [
    "CELL_FILE",
    "CONFIG_FILE",
    "ERROR_FILE",
    "FINDINGS",
    "GRPO_ROWS",
    "PRESETS",
    "REFERENCE_ROW",
    "ROWS",
    "ROW_BY_NAME",
    "AblationConfig",
    "Lane",
    "Row",
    "ensure_data",
    "findings_markdown",
    "load_ablation_config",
    "portable",
    "run_ablation",
    "run_lane",
    "verdict",
    "write_leaderboard",
]
