"""Which package may import which: lower layers never import higher ones, so there are no import cycles."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "gradspace"
# package -> packages it must not import (directly or lazily inside functions)
FORBIDDEN = {
    "pairs.py": ("gradspace.data", "gradspace.synth", "gradspace.models", "gradspace.ftgd", "gradspace.probing", "gradspace.labeling"),
    "synth": ("gradspace.data", "gradspace.ftgd", "gradspace.probing", "gradspace.labeling"),
    "utils": ("gradspace.data", "gradspace.synth", "gradspace.ftgd", "gradspace.probing", "gradspace.labeling"),
    "evaluation": ("gradspace.ftgd", "gradspace.probing", "gradspace.labeling"),
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_higher_ones(layer):
    root = PACKAGE / layer
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    assert files
    offending = {
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in files for module in imported_modules(path)
        if any(module == banned or module.startswith(banned + ".") for banned in FORBIDDEN[layer])
    }
    assert not offending, sorted(offending)
