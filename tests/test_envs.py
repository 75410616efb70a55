"""Conda envs: they parse, pin what pyproject.toml pins, exist for every rule, and hold what
each rule's script really imports (through the namd modules it reaches)."""

import ast
import importlib.metadata as md
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PROJECT_PINS = {canonicalize_name(r.name): r for r in map(Requirement, PYPROJECT["dependencies"])}


def env_packages(path: Path) -> tuple[str | None, dict[str, Requirement]]:
    """The env's python version and its pip packages by canonical name."""
    env = yaml.safe_load(path.read_text())
    python, pip = None, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                req = Requirement(line)
                pip[canonicalize_name(req.name)] = req
        elif dep.split("=")[0].strip() == "python":
            python = dep.split("=", 1)[1].lstrip("=")
    return python, pip


@pytest.fixture(scope="module")
def rules():
    out = subprocess.run([sys.executable, str(ROOT / "tools/rules_json.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [r for r in json.loads(out.stdout) if r["runs"]]


def test_there_are_envs():
    assert {p.stem for p in ENV_FILES} >= {"data", "models", "figures"}


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_parses_and_pins_like_pyproject(path):
    python, pip = env_packages(path)
    assert python and python in SpecifierSet(PYPROJECT["requires-python"]), f"{path.name}: python={python}"
    assert pip, f"{path.name} lists no pip packages"
    for name, req in pip.items():
        # The workflow's own venv installs pyproject.toml: a package only an env has would be
        # missing there, and a different pin would make the two runs differ.
        assert name in PROJECT_PINS, f"{path.name}: {req} is not a dependency in pyproject.toml"
        assert req.specifier == PROJECT_PINS[name].specifier, (
            f"{path.name}: {req} but pyproject.toml has {PROJECT_PINS[name]}"
        )


def test_every_rule_names_an_existing_env(rules):
    for rule in rules:
        assert rule["conda"], f"rule {rule['name']} has no conda: directive"
        assert Path(rule["conda"]).is_file(), f"rule {rule['name']}: {rule['conda']} does not exist"
        assert Path(rule["conda"]).parent == ROOT / "envs", f"rule {rule['name']}: env outside envs/"


# --- what a rule imports -------------------------------------------------------------------


def imports_of(path: Path, package: str | None) -> set[str]:
    """Absolute module names a file imports when it is imported or run: module level, with and
    try and if blocks and class bodies included; not function bodies (imported when called) nor
    `if TYPE_CHECKING:`. `package` resolves relative imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            # `from namd.data import crops` imports a submodule
            found.update(f"{module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def module_file(name: str) -> tuple[Path, str] | None:
    """The file of a namd module and the package its relative imports start from."""
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py", name
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py"), name.rpartition(".")[0]
    return None


def method_modules() -> set[str]:
    """What `get_method` (and `method_titles`, through it) imports at run time, which no import
    statement shows: every method module."""
    from namd.methods import get_method_module, known_methods

    return {get_method_module(name) for name in known_methods()}


def third_party_imports(script: Path) -> set[str]:
    """Top-level names of non-stdlib, non-namd modules the script needs, following namd (and the
    method modules, where the script calls get_method)."""
    todo, seen, outside = [(script, None)], set(), set()
    while todo:
        path, package = todo.pop()
        modules = imports_of(path, package)
        if path == script and any(call in path.read_text() for call in ("get_method(", "method_titles(")):
            modules |= method_modules()
        for module in modules:
            top = module.split(".")[0]
            if top != "namd":
                if top not in sys.stdlib_module_names:
                    outside.add(top)
                continue
            # importing namd.a.b runs namd/__init__.py and namd/a/__init__.py too
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                found = module_file(name)
                if found and name not in seen:
                    seen.add(name)
                    todo.append(found)
    return outside


def installed_closure(names: set[str]) -> set[str]:
    """The distributions these install, dependencies included (as pip resolves them here)."""
    todo, closure = list(names), set()
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return closure


def test_import_scan_follows_get_method_into_the_method_modules():
    for script in ("table1", "progression", "figure_samples"):  # titles and groups come off the classes
        assert "diffusers" in third_party_imports(ROOT / f"scripts/{script}.py"), script


def test_import_scan_follows_namd_and_relative_imports():
    # The scan itself: train_vae.py only imports namd, so everything found came through namd.
    found = third_party_imports(ROOT / "scripts/train_vae.py")
    assert {"torch", "numpy", "diffusers"} <= found
    assert not found & {"namd", "os", "pathlib"}


def test_each_env_holds_what_its_rules_import(rules):
    dists_of = md.packages_distributions()
    missing = {}
    for rule in rules:
        if not rule["script"]:
            continue
        _, pip = env_packages(Path(rule["conda"]))
        provided = installed_closure(set(pip))
        for module in sorted(third_party_imports(Path(rule["script"]))):
            dists = {canonicalize_name(d) for d in dists_of.get(module, [])}
            assert dists, f"rule {rule['name']} imports {module!r}, which no installed package provides"
            if not dists & provided:
                missing.setdefault(f"{rule['name']} ({Path(rule['conda']).name})", []).append(module)
    assert not missing, f"env lacks what the rule's script imports: {missing}"
