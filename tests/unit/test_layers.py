"""Which package may import which: every package of gradspace sits in a layer and imports only lower layers, so there
are no import cycles; and its gradspace imports sit at the top of the module, unless a comment says why not."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "gradspace"
# Lowest first. Packages of one layer do not import each other, except errors and utils: utils raises
# GradspaceError, and the entry points' error wrapper in errors.py uses utils when it runs.
LAYERS = [("errors", "utils"), ("pairs",), ("synth",), ("models",), ("evaluation",), ("data",), ("ftgd", "labeling"),
          ("probing",)]
MUTUAL = {"errors", "utils"}


def layer_of(package: str) -> int:
    return next(index for index, members in enumerate(LAYERS) if package in members)


def package_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def gradspace_imports(path: Path) -> list[tuple[ast.AST, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names if alias.name.startswith("gradspace.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gradspace."):
            found.append((node, node.module))
    return found


def allowed(importer: str, imported: str) -> bool:
    if importer == imported or {importer, imported} <= MUTUAL:
        return True
    return layer_of(imported) < layer_of(importer)


def test_every_package_has_a_layer():
    packages = {package_of(path) for path in PACKAGE.rglob("*.py")} - {"__init__"}
    assert packages == {package for members in LAYERS for package in members}


@pytest.mark.parametrize("package", [package for members in LAYERS for package in members])
def test_packages_import_only_lower_layers(package):
    files = [PACKAGE / f"{package}.py"] if (PACKAGE / f"{package}.py").is_file() else sorted((PACKAGE / package).rglob("*.py"))
    assert files
    offending = sorted(
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in files for _, module in gradspace_imports(path)
        if not allowed(package, module.split(".")[1])
    )
    assert not offending


def comment_above(lines: list[str], index: int) -> bool:
    """Whether a comment line heads the run of import lines that `lines[index]` belongs to."""
    while index > 0 and lines[index - 1].strip().startswith(("from ", "import ")):
        index -= 1
    return index > 0 and lines[index - 1].strip().startswith("#")


def test_gradspace_imports_sit_at_the_top_or_say_why():
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node, module in gradspace_imports(path):
            explained = "#" in lines[node.lineno - 1] or comment_above(lines, node.lineno - 1)
            if node.col_offset > 0 and not explained:
                hidden.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {module} inside a function")
    assert not hidden
