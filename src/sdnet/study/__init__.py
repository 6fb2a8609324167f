"""Studies: grids of training runs and their result tables (the paper's semi-supervised study, §5.1).

``grid`` plans the grid methods × label amounts × folds × seeds (and the mix / factor variants of ``variants``),
``runner`` runs it, one ordinary training run per cell, each ending with a test evaluation in ``result.json``;
``table`` turns a study folder into Markdown, CSV and a figure.
"""

from sdnet.study.grid import (
    METHODS,
    PROTOCOLS,
    LabelAmount,
    RunSpec,
    StudyGrid,
    StudyPlan,
    labelled_fractions,
    labelled_subjects,
    plan_study,
)
from sdnet.study.results import (
    RESULT_SCHEMA,
    STUDY_SCHEMA,
    RunResult,
    StudyError,
    VolumeResult,
    read_result,
)
from sdnet.study.runner import RunEvent, RunOutcome, StudySummary, execute_run, run_state, run_study
from sdnet.study.table import (
    Comparison,
    StudyTable,
    TableFiles,
    TableRow,
    build_table,
    paired_ttest,
    reference_comparisons,
    write_table,
)

__all__ = [
    "METHODS",
    "PROTOCOLS",
    "RESULT_SCHEMA",
    "STUDY_SCHEMA",
    "Comparison",
    "LabelAmount",
    "RunEvent",
    "RunOutcome",
    "RunResult",
    "RunSpec",
    "StudyError",
    "StudyGrid",
    "StudyPlan",
    "StudySummary",
    "StudyTable",
    "TableFiles",
    "TableRow",
    "VolumeResult",
    "build_table",
    "execute_run",
    "labelled_fractions",
    "labelled_subjects",
    "paired_ttest",
    "plan_study",
    "read_result",
    "reference_comparisons",
    "run_state",
    "run_study",
    "write_table",
]
