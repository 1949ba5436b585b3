"""The evaluation package's shape: a benchmark is one module, found by looking; no import circles."""

import ast
import importlib
import textwrap
from pathlib import Path

import vidlab.evaluation.benchmarks as benchmarks
from vidlab.evaluation.benchmarks import BENCHMARKS, data_formats, letter_reader
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.sets import FORMATS

SRC = Path(benchmarks.__file__).parents[3]


def test_every_benchmark_module_is_found_with_its_reader_and_format():
    folder = Path(benchmarks.__file__).parent
    for stem in {p.stem for p in folder.glob("*.py")} - {"__init__", "common", "spec", "choice"}:
        module = importlib.import_module(f"vidlab.evaluation.benchmarks.{stem}")
        specs = [v for v in vars(module).values() if isinstance(v, Benchmark)]
        assert specs and all(BENCHMARKS[s.name] is s for s in specs), stem
    for benchmark in BENCHMARKS.values():
        if benchmark.task == "multiple choice":
            assert benchmark.read_answer is not None, benchmark.name
            assert letter_reader({"benchmark": benchmark.name}) is benchmark.read_answer
    assert [f.name for _, f in data_formats()] == ["videomme", "mvbench", "mlvu"] == list(FORMATS[3:])


def test_a_new_benchmark_is_one_module(tmp_path, monkeypatch):
    (tmp_path / "tinybench.py").write_text(textwrap.dedent('''
        from vidlab.evaluation.benchmarks.spec import Benchmark, DataFormat

        def read_tiny(response, options):
            return "A" if response.startswith("yes") else None

        BENCHMARK = Benchmark(name="tinybench", title="TinyBench", task="multiple choice", folder="tinybench",
                              download="-", layout="-", splits=("test",), load=lambda root, split, subs: None,
                              read_answer=read_tiny,
                              data_format=DataFormat(name="tinybench", read=lambda p, r, s: None,
                                                     detect=lambda p, first: False))
    '''))
    monkeypatch.setattr(benchmarks, "__path__", [*benchmarks.__path__, str(tmp_path)])
    found = {b.name: b for b in benchmarks._discover()}
    assert isinstance(found["tinybench"], Benchmark) and found["tinybench"].read_answer("yes", ["x"]) == "A"
    assert set(BENCHMARKS) < set(found)


def _imports(path: Path) -> set[str]:
    """The vidlab modules a file imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vidlab"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vidlab"))
    return found


def test_no_import_circles_in_evaluation():
    files = {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (SRC / "vidlab" / "evaluation").rglob("*.py")}
    graph = {name: {m for m in _imports(path) if m in files and m != name} for name, path in files.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for step in graph[start]:
            if step == goal or (step not in seen and reaches(step, goal, seen | {step})):
                return True
        return False

    in_circles = sorted(name for name in graph if reaches(name, name, {name}))
    assert not in_circles, in_circles
