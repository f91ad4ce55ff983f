"""Who may import whom (docs/architecture.md): data flows read -> route -> strategy -> predictor -> write,
and nothing low imports something high. Read from the source with ast, so imports inside functions count."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, write_case

PROJECT_PACKAGES = ("predict", "models", "router", "serve", "evaluation", "benchmarks", "sample_data", "convert",
                    "tests")
# part of the tree -> the project packages it may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "models": {"models"},
    "models.export": {"models", "sample_data"},  # build time: calibration images
    "router": {"models", "router"},
    "predict": {"models", "router"},
    "serve": {"models", "router", "serve"},  # the interactive server sits above router/: nothing below imports it
    "sample_data": {"sample_data"},  # numpy only: models/export/ imports it (calibration slices)
    "convert": {"models", "router", "convert"},  # host tool: case files, modality names, box geometry
    "evaluation": {"models", "router", "evaluation", "sample_data", "convert"},
    # benchmarks.scale_out times the CLI in-process
    "benchmarks": {"models", "router", "serve", "evaluation", "benchmarks", "sample_data", "convert", "predict"},
}
RUNTIME_BLOCKED = ("torch", "nncf", "timm", "evaluation", "benchmarks", "sample_data", "convert", "SimpleITK", "tests",
                   "matplotlib", "dask", "distributed")  # Dask: only for --scheduler (requirements-dev.txt)


def _part(module: str) -> str:
    return "models.export" if module.startswith("models.export") else module.split(".")[0]


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names if name.split(".")[0] in PROJECT_PACKAGES}


def _sources() -> list[tuple[str, object]]:
    found = [("predict", ROOT / "predict.py")]
    for package in ("models", "router", "serve", "evaluation", "benchmarks", "sample_data", "convert"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found.append((module, path))
    return found


def test_no_import_runs_upward() -> None:
    wrong = []
    for module, path in _sources():
        part = _part(module)
        for imported in _imports(path):
            if imported not in ALLOWED[part]:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong


def _module_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules (files) `path` imports, anywhere in it: `from a.b import c` is a.b.c where that is a
    module, else a.b; `import a.b` is a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return {name for name in found if name in modules}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (or a node importing itself), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm (the graph is small: recursion is fine)
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycle_between_files_or_top_level_folders() -> None:
    """No circle in the import graph (imports inside functions count): between the project's files, and between
    its top-level parts (models/ with its export/: sample_data/ may not import models/ while models/export/
    imports sample_data/)."""
    paths = {module.removesuffix(".__init__"): Path(path) for module, path in _sources()}
    files = {module: _module_imports(path, set(paths)) - {module} for module, path in paths.items()}
    folders: dict[str, set[str]] = {}
    for module, imported in files.items():
        top = module.split(".")[0]
        folders.setdefault(top, set()).update({name.split(".")[0] for name in imported} - {top})
    assert not _cycles(files), _cycles(files)
    assert not _cycles(folders), _cycles(folders)


def _folder(module: str, paths: dict[str, Path]) -> str:
    """The folder (package) a module's file lies in: `router.strategies.labels` -> router.strategies; a package's
    own `__init__` -> that package."""
    return module if paths[module].name == "__init__.py" else module.rpartition(".")[0] or module


def test_no_import_cycle_between_folders_at_any_depth() -> None:
    """No circle between folders at any depth: a subfolder and the folder above it count as two (router/ and
    router/strategies/: the strategies are a layer below router's files, which import them, so none of them
    may import a module of router/ itself)."""
    paths = {module.removesuffix(".__init__"): Path(path) for module, path in _sources()}
    folders: dict[str, set[str]] = {}
    for module, path in paths.items():
        here = _folder(module, paths)
        imported = {_folder(name, paths) for name in _module_imports(path, set(paths))}
        folders.setdefault(here, set()).update(imported - {here})
    assert not _cycles(folders), _cycles(folders)
    upward = sorted(f"{module} imports {name}" for module, path in paths.items()
                    if module.startswith("router.strategies.")
                    for name in _module_imports(path, set(paths))
                    if name.startswith("router.") and not name.startswith("router.strategies"))
    assert not upward, upward


def test_runtime_works_with_dev_code_and_torch_blocked(tmp_path, ir_dir) -> None:
    """predict.py and all it imports run where torch, the evaluation and dev folders are absent (the image)."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
    image[10:30, 20:40] = 200
    write_case(tmp_path / "in" / "2DBox_CT_x.npz", imgs=image, boxes=np.array([[20, 10, 39, 29]]))
    volume = np.clip(rng.normal(40, 5, (6, 40, 40)), 0, 255).astype(np.uint8)
    volume[1:5, 10:30, 10:30] = 200
    write_case(tmp_path / "in" / "3DBox_PET_y.npz", imgs=volume, boxes=np.array([[10, 10, 1, 29, 29, 4]]),
               spacing=np.array([4.0, 4.0, 4.0]))
    code = (
        "import sys\n"
        f"for name in {RUNTIME_BLOCKED!r}: sys.modules[name] = None  # importing any of them now fails\n"
        f"import predict; status = predict.main(['-i', r'{tmp_path / 'in'}', '-o', r'{tmp_path / 'out'}', "
        "'--no-progress'])\n"
        f"loaded = [m for m in sys.modules if sys.modules[m] is not None and m.split('.')[0] in {RUNTIME_BLOCKED!r}]\n"
        "assert not loaded, loaded\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("2DBox_CT_x", "3DBox_PET_y"):
        with np.load(tmp_path / "out" / f"{name}.npz") as npz:
            assert npz["segs"].any()


CONSOLE_SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_console_script_entry_points_answer_help(script: str, capsys) -> None:
    """Each [project.scripts] entry names a main(argv) that prints its usage for --help (in this process:
    what the installed script runs, without the install)."""
    module, _, function = CONSOLE_SCRIPTS[script].partition(":")
    main = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.integration  # needs ./build.sh setup's editable install in .venv
@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_console_scripts_are_installed(script: str) -> None:
    """./build.sh setup installs the project in editable mode with its console scripts."""
    done = subprocess.run([str(ROOT / ".venv" / "bin" / script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr


@pytest.mark.integration  # builds a wheel (setuptools, seconds)
def test_wheel_holds_the_runtime_server_evaluation_and_convert_only(tmp_path) -> None:
    """`pip install .` installs no dev tools as top-level packages (benchmarks, sample_data and its npz,
    the torch export); built from a copy, so the checkout gets no build/ or egg-info."""
    import shutil
    import zipfile

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "predict.py"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("ir", "__pycache__", "*.pyc")
    for package in ("models", "router", "serve", "evaluation", "convert", "benchmarks", "sample_data"):
        shutil.copytree(ROOT / package, source / package, ignore=skip)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"predict.py", "router", "models", "serve", "evaluation", "convert"}, top
    assert "router/routes.toml" in names and "router/strategies/registry.py" in names
    assert not [name for name in names if name.startswith("models/export/")]


def test_demo_cases_outside_a_checkout_say_so_in_one_line(tmp_path) -> None:
    """evaluation.demo_cases makes its cases from sample_data/, which the wheel does not install."""
    code = ("import sys\nsys.modules['sample_data'] = None  # as where only the wheel is installed\n"
            f"sys.argv = ['demo_cases', '--out', r'{tmp_path / 'demo'}']\n"
            "import evaluation.demo_cases\nevaluation.demo_cases.main()\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: evaluation.demo_cases needs sample_data/") and done.stderr.count("\n") == 1
    assert not (tmp_path / "demo").exists()


def test_a_users_own_models_package_is_refused_in_one_line(tmp_path: Path) -> None:
    """A research repository's `models/` in the working folder comes first on sys.path and would shadow ours."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("# the user's own models\n")
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    for entry in ("from router.pipeline import Segmenter", "import predict"):  # the library's entry, the CLI's
        # refused before any module is loaded into their package (an editable install's finder would add ours)
        code = (f"import sys\ntry:\n    {entry}\nexcept ImportError:\n"
                "    print(sorted(m for m in sys.modules if m.startswith('models.')))\n    raise\n")
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 1 and done.stdout.strip() == "[]", (entry, done.stdout, done.stderr)
        assert "seg needs its own 'models' package" in done.stderr.strip().splitlines()[-1], (entry, done.stderr)
    fine = subprocess.run([sys.executable, "-c", "from router.pipeline import Segmenter"], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=120)
    assert fine.returncode == 0, fine.stderr
