"""Imports flow one way: lower layers never import from the layers above them.

The layers, bottom up: the base helpers (`_checks`, `_shapes`, `_divergence`), the SDEs, the
solvers, then the evaluation and training layers (`likelihood`, `elbo`, `metrics`, `training`,
...). Read statically from the source (an import inside a function counts too), so an upward arrow
fails here even when it is lazy. Data sets (`toy`) sit below the metrics that use them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sdescore

PACKAGE = Path(sdescore.__file__).parent

# Everything above the solvers: the evaluation layer (and its public re-export of the divergence
# estimators), training, and the user-facing wrappers that call the solvers.
ABOVE_SOLVERS = (
    "sdescore.likelihood",
    "sdescore._likelihood_solver",
    "sdescore.schedule",
    "sdescore.elbo",
    "sdescore.dequantization",
    "sdescore.divergence",
    "sdescore.metrics",
    "sdescore.training",
    "sdescore.distributed",
    "sdescore.ema",
    "sdescore.guidance",
    "sdescore.interop",
    "sdescore.losses",
    "sdescore.models",
    "sdescore.toy",
    "sdescore.reverse",
    "sdescore.pretrained",
)
BASE = ("sdescore._checks", "sdescore._shapes", "sdescore._divergence")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str) -> str:
    """`sdescore.x.y` as far as it names a module or package (drops a trailing attribute)."""
    parts = name.split(".")
    while len(parts) > 1:
        p = PACKAGE.parent.joinpath(*parts)
        if p.with_suffix(".py").is_file() or (p / "__init__.py").is_file():
            break
        parts.pop()
    return ".".join(parts)


def package_imports(path: Path, source: str | None = None) -> set[str]:
    """The `sdescore` modules that the file at `path` (or `source` placed there) imports,
    anywhere in its body."""
    source = path.read_text() if source is None else source
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {_resolve(n) for n in names if n == "sdescore" or n.startswith("sdescore.")}
    return found


def _files(*subpackages: str):
    """Every module of the subpackages, their own subpackages (`solvers/exp_abm/`) included."""
    for sub in subpackages:
        yield from sorted((PACKAGE / sub).rglob("*.py"))


def _id(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violations(imports: set[str], forbidden) -> list[str]:
    """The imported modules in `forbidden` (or the top-level package, which imports them all)."""
    return sorted(m for m in imports if m == "sdescore" or _within(m, forbidden))


@pytest.mark.parametrize("path", list(_files("solvers")), ids=_id)
def test_solvers_import_nothing_above_them(path):
    assert _violations(package_imports(path), ABOVE_SOLVERS) == []


@pytest.mark.parametrize("path", list(_files("sdes")), ids=_id)
def test_sdes_import_only_the_base_helpers_and_each_other(path):
    allowed = (*BASE, "sdescore.sdes")
    imports = package_imports(path)
    if path.name == "base.py":  # the one allowed back-reference: SDE.reverse builds the wrappers
        imports.discard("sdescore.reverse")
    assert sorted(m for m in imports if not _within(m, allowed)) == []


@pytest.mark.parametrize("name", BASE)
def test_base_helpers_import_only_each_other(name):
    path = PACKAGE / (name.rpartition(".")[2] + ".py")
    assert package_imports(path) <= set(BASE)


@pytest.mark.parametrize("path", list(_files("toy")), ids=_id)
def test_toy_data_import_no_metrics_or_evaluation(path):
    forbidden = [m for m in ABOVE_SOLVERS if m not in ("sdescore.toy", "sdescore.reverse")]
    assert _violations(package_imports(path), forbidden) == []


def test_the_checker_sees_relative_lazy_and_absolute_imports():
    # The checker must catch the arrows it guards against; both existed: `solvers/exp_abm.py`
    # (now the package `solvers/exp_abm/`) imported `..divergence` and `toy/images.py` lazily
    # imported `..metrics.digits`. A module of a solvers subpackage reaches the same module
    # with one dot more; its `__init__.py` counts as the subpackage itself.
    solvers = PACKAGE / "solvers"
    images = PACKAGE / "toy" / "images.py"
    for path, up in [
        (solvers / "grid.py", ".."),
        (solvers / "exp_abm" / "system.py", "..."),
        (solvers / "exp_abm" / "__init__.py", "..."),
    ]:
        assert path in list(_files("solvers")), path
        lazy = f"def f():\n    from {up}divergence import value_and_divergence\n"
        assert _violations(package_imports(path, lazy), ABOVE_SOLVERS) == ["sdescore.divergence"]
        # One dot fewer stays among the solvers: no arrow.
        inside = f"from {up[1:]}_common import COLLAPSE\n"
        assert _violations(package_imports(path, inside), ABOVE_SOLVERS) == [], path
        for source, found in [
            ("import sdescore.likelihood\n", "sdescore.likelihood"),
            ("from sdescore import likelihood\n", "sdescore.likelihood"),
            (f"from {up} import elbo\n", "sdescore.elbo"),
            (f"from {up} import VPSDE\n", "sdescore"),
        ]:
            assert found in _violations(package_imports(path, source), ABOVE_SOLVERS), source
    lazy = "def g():\n    from ..metrics.digits import digits_data\n"
    assert _violations(package_imports(images, lazy), ["sdescore.metrics"]) == [
        "sdescore.metrics.digits"
    ]


def test_moved_names_keep_their_public_import_paths():
    import sdescore._divergence as mechanism
    import sdescore.divergence as public
    import sdescore.metrics.digits as metrics_digits

    for name in public.__all__:
        assert getattr(public, name) is getattr(mechanism, name)
    assert sdescore.metrics.digits_data is sdescore.toy.digits_data
    assert metrics_digits.digits_to_images is sdescore.toy.digits_to_images
    assert metrics_digits.DIGITS_SPLITS is sdescore.toy.DIGITS_SPLITS
