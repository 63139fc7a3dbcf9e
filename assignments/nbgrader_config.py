"""nbgrader configuration of the dlcourse assignments (source/<name>/<name>.ipynb).

Run nbgrader from this folder: `nbgrader generate_assignment <name>`, `nbgrader autograde <name>`.
"""

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.course_id = "dlcourse"
c.CourseDirectory.root = "."
# One cell may train a small network on a few processes; nothing else sets the timeout
# (FACTS.md: a c.Execute.timeout anywhere would silently override this one).
c.ExecutePreprocessor.timeout = 300
c.ClearSolutions.code_stub = {
    "python": '# YOUR CODE HERE\nraise NotImplementedError("write your solution here")'
}
