"""nbgrader configuration of the dlcourse assignments (source/<name>/<name>.ipynb).

Run nbgrader from this folder: `nbgrader generate_assignment <name>`, `nbgrader autograde <name>`
(README.md has the whole cycle). The notebooks are written by build_sources.py.
"""

import os
import sys

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearHiddenTests,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from regrade import (  # noqa: E402 - beside this file
    IsolatedRegrade,
    SafeExecute,
    ScrubTracebacks,
    SeedHiddenInputs,
    StartRegrade,
)

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.course_id = "dlcourse"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))

# The one execution timeout: seconds per cell (and per call into a student's code in the
# isolated regrade). Nothing else sets it (FACTS.md: a c.Execute.timeout anywhere would
# silently override this one). An infinite loop in a submission ends here.
c.ExecutePreprocessor.timeout = 120

# The stub left where a solution was: the task's own NotImplementedError follows
# `### END SOLUTION` in every solution cell, so the release raises it, naming the task.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE"}

# A deleted test cell is put back from the gradebook and graded (else "needs manual grading").
c.OverwriteCells.add_missing_cells = True

# The course secret that seeds every student's hidden inputs (regrade.SeedHiddenInputs): a file
# beside this one, never committed (.gitignore) nor released (generate_assignment copies only
# source/<name>/). Make it once a term: `python -m dlcourse.grading secret course_secret`.
# It may live anywhere the grader can read: point this at it (README.md: where, and rotation).
c.SeedHiddenInputs.secret_file = os.path.join(c.CourseDirectory.root, "course_secret")
# Where there is no secret file (a cohort job's workspace): the student's key, written by
# `python -m dlcourse.grading cohort` / `prepare` from the secret (dlcourse/cohort.py).
c.SeedHiddenInputs.keys_file = os.path.join(c.CourseDirectory.root, "grading_keys.json")

# The test cells also run apart from the student's code (regrade.py), side by side with the
# kernel; a cell keeps its points only if it passes in both.
c.Autograde.autograde_preprocessors = [
    SeedHiddenInputs,  # the student's key for the hidden inputs, before the kernel and judge start
    StartRegrade,
    SafeExecute,  # nbgrader's Execute; a kernel killed by the student's code fails its cells only
    IsolatedRegrade,
    ScrubTracebacks,  # a traceback could show the hidden tests' lines: feedback gets one line
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Feedback shows which tests failed, never the hidden tests' source.
c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, ClearHiddenTests]
