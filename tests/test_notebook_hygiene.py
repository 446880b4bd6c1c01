"""Conventions that every chapter notebook in book/ follows, checked on the stored JSON.

Notebooks are committed without outputs, execution counts or widget state, and run in
the ``python3`` kernel. The first code cell is a hidden Colab bootstrap and the second,
tagged ``parameters``, selects the run profile. Each chapter states its goal below its
title and ends with a takeaway section and exercises that each have a solution.
"""

import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parent.parent / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))

BOOTSTRAP = """\
# Colab only: install spanlib from the repository (does nothing elsewhere).
import importlib.util, subprocess, sys
if importlib.util.find_spec("google") and importlib.util.find_spec("google.colab"):
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "spanlib @ git+https://github.com/spanlib/spanlib@main"], check=True)"""
PROFILE_LINE = "PROFILE = spanlib.profile()"
TAKEAWAY_HEADING = "## What to take away"
GOAL_MIN_WORDS = 15

HEADING = re.compile(r"^(#{1,6}) \S")
# Opening line of a MyST directive, with backtick or colon fences: ```{name} argument
DIRECTIVE = re.compile(r"^(?:`{3,}|:{3,})\{(exercise|solution)\}\s*(\S*)")
LABEL = re.compile(r"^:label:\s*(\S+)")


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def markdown_lines(notebook: dict) -> list[str]:
    """Return the lines of all markdown cells, without those inside fenced code blocks."""
    lines = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        in_code = False
        for line in source(cell).splitlines():
            fence = re.match(r"^(`{3,}|~{3,})(\w*)\s*$", line)
            if fence and (in_code or fence.group(2)):
                # A fenced block with a language (```python) or its closing fence.
                in_code = not in_code
                continue
            if not in_code:
                lines.append(line)
    return lines


def headings(notebook: dict) -> list[tuple[int, str]]:
    """Return (level, line) for every markdown heading outside code blocks."""
    found = []
    for line in markdown_lines(notebook):
        match = HEADING.match(line)
        if match:
            found.append((len(match.group(1)), line))
    return found


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def notebook_id(path: Path) -> str:
    return path.name


each_notebook = pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)


def test_book_has_notebooks():
    assert NOTEBOOKS, f"No notebooks found in {BOOK}"


@each_notebook
def test_kernelspec_is_python3(path):
    kernelspec = load(path)["metadata"].get("kernelspec", {})
    assert kernelspec.get("name") == "python3", f"kernelspec is {kernelspec}, expected name python3"


@each_notebook
def test_code_cells_have_no_outputs(path):
    with_outputs = [index for index, cell in enumerate(load(path)["cells"])
                    if cell["cell_type"] == "code" and cell.get("outputs")]
    assert not with_outputs, f"Cells {with_outputs} have outputs: run nbstripout on {path.name}"


@each_notebook
def test_code_cells_have_no_execution_count(path):
    counted = [index for index, cell in enumerate(load(path)["cells"])
               if cell["cell_type"] == "code" and cell.get("execution_count") is not None]
    assert not counted, f"Cells {counted} have execution counts: run nbstripout on {path.name}"


@each_notebook
def test_no_widget_state(path):
    assert "widgets" not in load(path)["metadata"], f"Widget state is stored: run nbstripout on {path.name}"


@each_notebook
def test_first_code_cell_is_colab_bootstrap(path):
    first = code_cells(load(path))[0]
    assert "remove-cell" in tags(first), "The first code cell must be tagged remove-cell"
    assert source(first).strip() == BOOTSTRAP, "The first code cell must be the Colab bootstrap, unchanged"


@each_notebook
def test_second_code_cell_sets_profile(path):
    second = code_cells(load(path))[1]
    assert "parameters" in tags(second), "The second code cell must be tagged parameters"
    assert PROFILE_LINE in source(second).splitlines(), f"The parameters cell must contain `{PROFILE_LINE}`"


@each_notebook
def test_single_title(path):
    titles = [line for level, line in headings(load(path)) if level == 1]
    assert len(titles) == 1, f"Expected exactly one '# ' title, found {titles}"


@each_notebook
def test_title_comes_first(path):
    first = load(path)["cells"][0]
    assert first["cell_type"] == "markdown", "The first cell must be markdown with the title"
    assert source(first).lstrip().startswith("# "), "The first cell must start with the '# ' title"


@each_notebook
def test_goal_follows_title(path):
    notebook = load(path)
    before_code = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            break
        before_code.append(source(cell))
    prose = "\n".join(before_code).lstrip()
    prose = prose.split("\n", 1)[1] if "\n" in prose else ""
    words = len(prose.split())
    assert words >= GOAL_MIN_WORDS, (
        f"Only {words} words between the title and the first code cell; state the chapter's goal there"
    )


@each_notebook
def test_heading_levels_do_not_skip(path):
    levels = [level for level, _ in headings(load(path))]
    skips = [(upper, lower) for upper, lower in zip(levels, levels[1:]) if lower > upper + 1]
    assert not skips, f"Heading levels skip (from, to): {skips}"


@each_notebook
def test_takeaway_section_present(path):
    lines = [line.rstrip() for line in markdown_lines(load(path))]
    assert TAKEAWAY_HEADING in lines, f"Missing the section heading '{TAKEAWAY_HEADING}'"


def exercises_and_solutions(notebook: dict) -> tuple[list[str], list[str]]:
    """Return the labels of the exercise directives and the targets of the solution directives."""
    exercises, solutions = [], []
    pending_exercise = False
    for line in markdown_lines(notebook):
        directive = DIRECTIVE.match(line)
        if directive:
            name, argument = directive.groups()
            if name == "solution":
                solutions.append(argument)
            else:
                exercises.append("")
            pending_exercise = name == "exercise"
            continue
        label = LABEL.match(line)
        if label and pending_exercise:
            exercises[-1] = label.group(1)
            pending_exercise = False
    return exercises, solutions


@each_notebook
def test_at_least_two_exercises(path):
    exercises, _ = exercises_and_solutions(load(path))
    assert len(exercises) >= 2, f"Found {len(exercises)} exercise directives, expected at least 2"


@each_notebook
def test_every_exercise_has_solution(path):
    exercises, solutions = exercises_and_solutions(load(path))
    unlabelled = exercises.count("")
    assert unlabelled == 0, f"{unlabelled} exercises have no :label:, which their solution needs"
    missing = sorted(set(exercises) - set(solutions))
    assert not missing, f"Exercises without a solution: {missing}"


@each_notebook
def test_solutions_point_to_exercises(path):
    exercises, solutions = exercises_and_solutions(load(path))
    dangling = sorted(set(solutions) - set(exercises))
    assert not dangling, f"Solutions whose exercise label is not in this notebook: {dangling}"
