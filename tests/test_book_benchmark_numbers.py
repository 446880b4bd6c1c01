"""The step times that the full-size chapter quotes match the benchmark table they come from.

Chapter 09 estimates training times at the `paper` profile's size from `benchmarks/span_speed.py`, whose
results are recorded in `benchmarks/README.md`. The chapter cannot read that file on Colab, so it
copies the numbers. This test reads the copy from the notebook and the original from the README.
"""

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "book" / "09_full_size.ipynb"
BENCHMARKS = ROOT / "benchmarks" / "README.md"

# Chapter phase -> step name in the benchmark table (rows "| paper | lowrank | <step> | ...").
STEPS = {
    "EM (warm-up)": "einet em",
    "coordinate descent": "span coordinate",
    "fine-tuning": "span finetune",
    "fine-tuning without cache": "span finetune uncached",
}
ROW = re.compile(r"^\| paper \| lowrank \| (?P<step>[a-z ]+?) \| (?P<wall>[\d.]+) \| (?P<cpu>[\d.]+) \|", re.MULTILINE)


def chapter_constant(name: str):
    """Return the literal value assigned to `name` in a code cell of the chapter."""
    cells = json.loads(CHAPTER.read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for node in ast.parse("".join(cell["source"])).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                return ast.literal_eval(node.value)
    raise AssertionError(f"{CHAPTER.name} assigns no {name}")


def benchmark_rows() -> dict[str, dict[str, float]]:
    rows = {m["step"]: {"wall": float(m["wall"]), "cpu": float(m["cpu"])} for m in ROW.finditer(BENCHMARKS.read_text())}
    assert rows, f"no '| paper | lowrank |' rows in {BENCHMARKS}"
    return rows


def test_chapter_step_times_match_benchmark():
    quoted = chapter_constant("CPU_STEP_SECONDS")
    rows = benchmark_rows()
    assert set(quoted) == set(STEPS)
    for phase, step in STEPS.items():
        assert quoted[phase] == rows[step], f"{phase}: chapter {quoted[phase]}, benchmark {rows[step]}"


def test_chapter_gflop_match_benchmark():
    quoted = chapter_constant("FORWARD_GFLOP")
    match = re.search(r"^\| paper \| lowrank \| [\d.]+ \| (?P<circuit>[\d.]+) \| (?P<encoders>[\d.]+) \|",
                      BENCHMARKS.read_text(), re.MULTILINE)
    assert match, f"no paper/lowrank GFLOP row in {BENCHMARKS}"
    assert quoted == {"circuit": float(match["circuit"]), "encoders": float(match["encoders"])}
