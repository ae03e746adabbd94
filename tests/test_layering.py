"""The import graph keeps the layering of CONVENTIONS.md: a test over every ``.py`` file's imports (``ast``).

Layers, lowest first (an import may point down or sideways, never up):

0. foundation: ``jaxsafety`` itself, ``jaxsafety.config``, ``jaxsafety.distributed``, ``jaxsafety.io``,
   ``jaxsafety.launch``, ``jaxsafety.xla_flags``, and ``envs``
   (games know no learner; rl and the studies use them);
1. ``jaxsafety.models``;
2. ``jaxsafety.data`` (synthetic task data shared by the studies; below train, which trains on it);
3. ``jaxsafety.train``;
4. ``jaxsafety.rl``;
5. the studies: every other module or subpackage of ``jaxsafety`` (shaping, scaling, judges, uplift, ... and any
   added later), and no study imports another;
6. ``experiments`` and ``benchmarks``: the library (``jaxsafety``, ``envs``) never imports them.

And no module imports another module's private names: ``from m import _x`` and ``m._x`` on an imported module are
reported wherever they are, also between two modules of one subpackage (a name with a leading underscore is private
to the module that defines it: what another module needs is public, with a docstring). A private *module*
(``scaling/_special.py``) is private to its package: modules of that package may import it, no one else may.
``tests/`` are exempt (they may test private helpers).

Why an ``ast`` test and not import-linter: import-linter's ``layers`` / ``independence`` / ``forbidden`` contracts
(built on grimp, which also sees imports inside functions) cover the module-level rules, but (a) it has no contract
for private *names* (its graph is of modules, not of the names imported from them, nor of ``m._x`` attribute uses),
(b) its contracts list the study packages by name, so a new study would not be held to the independence rule
until someone adds it to the config, while here every subpackage that is not a named lower layer is a study, and
(c) it would be one more dev dependency. This checker is about 150 lines, sees imports anywhere in a file (inside
functions and ``if TYPE_CHECKING:`` blocks included), resolves relative imports, and ``importlib.import_module``
calls with a literal name. It checks direct imports only: a chain that climbs is caught at the edge that climbs.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("jaxsafety", "envs", "experiments", "benchmarks")
LIBRARY = ("jaxsafety", "envs")
APPS = ("experiments", "benchmarks")
FOUNDATION_MODULES = (
    "jaxsafety",
    "jaxsafety.config",
    "jaxsafety.distributed",
    "jaxsafety.io",
    "jaxsafety.launch",
    "jaxsafety.xla_flags",
)
# jaxsafety subpackages below the studies, with their rank; everything else under jaxsafety is a study.
LOWER_SUBPACKAGES = {"models": 1, "data": 2, "train": 3, "rl": 4}
STUDY_RANK, APP_RANK = 5, 6
RANK_NAMES = {0: "foundation", 1: "models", 2: "data", 3: "train", 4: "rl", 5: "study", 6: "app"}
# Public methods of NamedTuple carry a leading underscore; they are never module attributes, listed for safety.
PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    kind: str  # "layer", "study", "app", "private"
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.kind}] {self.message}"


def module_index(root: Path, tops: tuple[str, ...] = SCANNED) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under the ``tops`` folders of ``root``."""
    index = {}
    for top in tops:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            index[".".join(parts)] = path
    return index


def layer(module: str) -> tuple[int, str]:
    """(rank, group) of a project module: group names the study (or app) so that two studies can be told apart."""
    parts = module.split(".")
    if parts[0] in APPS:
        return APP_RANK, parts[0]
    if parts[0] == "envs" or module in FOUNDATION_MODULES:
        return 0, "foundation"
    if parts[1] in LOWER_SUBPACKAGES:
        return LOWER_SUBPACKAGES[parts[1]], parts[1]
    return STUDY_RANK, parts[1]


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class _ImportVisitor(ast.NodeVisitor):
    """Collects (line, imported module, imported name or None) and names bound to project modules."""

    def __init__(self, module: str, is_package: bool, index: dict[str, Path]):
        self.module, self.index = module, index
        self.package = module if is_package else module.rpartition(".")[0]
        self.edges: list[tuple[int, str, str | None]] = []  # (line, module, name imported from it)
        self.module_names: dict[str, str] = {}  # local name -> project module it is bound to
        self.attributes: list[tuple[int, str]] = []  # (line, dotted attribute chain starting at a local name)

    def _project(self, name: str) -> bool:
        return name.split(".")[0] in SCANNED

    def _containing_module(self, dotted: str) -> str | None:
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in self.index:
                return ".".join(parts[:end])
        return None

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not self._project(alias.name):
                continue
            self.edges.append((node.lineno, alias.name, None))
            if alias.asname:
                self.module_names[alias.asname] = alias.name
            else:
                self.module_names[alias.name.split(".")[0]] = alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if not self._project(source):
            return
        for alias in node.names:
            if alias.name == "*":
                self.edges.append((node.lineno, source, None))
            elif f"{source}.{alias.name}" in self.index:  # a submodule: the edge is to the submodule itself
                self.edges.append((node.lineno, f"{source}.{alias.name}", None))
                self.module_names[alias.asname or alias.name] = f"{source}.{alias.name}"
            else:
                self.edges.append((node.lineno, source, alias.name))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            target = node.args[0].value
            if isinstance(target, str) and self._project(target):
                self.edges.append((node.lineno, target, None))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name):
            self.attributes.append((node.lineno, ".".join([value.id, *reversed(chain)])))
            return  # the inner attributes are prefixes of this chain
        self.generic_visit(node)


def _private_module_violation(importer: str, module: str) -> str | None:
    """The first private component of ``module`` that ``importer`` may not reach (outside its package)."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if is_private(part):
            package = ".".join(parts[:i])
            if not (importer == package or importer.startswith(package + ".")):
                return (
                    f"{importer} imports the private module {'.'.join(parts[: i + 1])} from outside {package}"
                )
    return None


def check_imports(root: Path, tops: tuple[str, ...] = SCANNED) -> list[Violation]:
    """Every layering and private-name violation in the ``.py`` files under ``root/<tops>``, sorted by file:line."""
    index = module_index(root, tops)
    found: set[Violation] = set()
    for importer, path in index.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        visitor = _ImportVisitor(importer, path.name == "__init__.py", index)
        visitor.visit(tree)
        rel = path.relative_to(root).as_posix()
        rank, group = layer(importer)

        def report(line: int, kind: str, message: str, rel: str = rel) -> None:
            found.add(Violation(rel, line, kind, message))

        for line, target, name in visitor.edges:
            imported = visitor._containing_module(target) or target
            if imported not in index and imported.split(".")[0] not in tops:
                continue
            t_rank, t_group = layer(imported)
            if t_rank == APP_RANK and rank < APP_RANK:
                report(line, "app", f"library module {importer} imports {imported} ({t_group}/)")
            elif t_rank > rank:
                report(
                    line,
                    "layer",
                    f"{importer} ({RANK_NAMES[rank]}) imports the higher layer {imported} ({RANK_NAMES[t_rank]})",
                )
            elif rank == t_rank == STUDY_RANK and group != t_group:
                report(line, "study", f"study {group} imports study {t_group} ({imported})")
            message = _private_module_violation(importer, target)
            if message:
                report(line, "private", message)
            elif name is not None and is_private(name) and name not in PUBLIC_UNDERSCORE:
                report(line, "private", f"{importer} imports the private name {name} from {target}")

        for line, chain in visitor.attributes:
            head, _, rest = chain.partition(".")
            if head not in visitor.module_names:
                continue
            dotted = f"{visitor.module_names[head]}.{rest}"
            owner = visitor._containing_module(dotted)
            if owner is None or owner == importer:
                continue
            attribute = dotted[len(owner) + 1 :].split(".")[0]
            if is_private(attribute) and attribute not in PUBLIC_UNDERSCORE:
                if f"{owner}.{attribute}" in index:  # a private submodule reached as an attribute
                    message = _private_module_violation(importer, f"{owner}.{attribute}")
                    if message:
                        report(line, "private", message)
                else:
                    report(line, "private", f"{importer} uses the private name {owner}.{attribute}")
    return sorted(found)


def test_repository_keeps_its_layers():
    violations = check_imports(REPO_ROOT)
    assert not violations, f"{len(violations)} import violation(s):\n" + "\n".join(map(str, violations))


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def test_checker_reports_each_kind_of_violation(tmp_path):
    """A synthetic tree with one of each violation (and allowed imports beside them): exactly those are reported."""
    _write_tree(
        tmp_path,
        {
            "jaxsafety/__init__.py": "",
            "jaxsafety/config.py": "import jaxsafety.models\n",  # foundation -> models: up
            "jaxsafety/models/__init__.py": "from jaxsafety.models.m import f\n",
            "jaxsafety/models/_kernels.py": "def k(): ...\n",
            "jaxsafety/models/m.py": """\
                from jaxsafety.config import check
                from jaxsafety.models._kernels import k
                from jaxsafety import __version__
                def f():
                    from jaxsafety.train import t
                def _helper(): ...
                """,  # line 5: models -> train inside a function; the private module of its own package is fine
            "jaxsafety/models/m2.py": "from .m import _helper\n",  # private name within one subpackage
            "jaxsafety/data/__init__.py": "from jaxsafety.models import m\n",
            "jaxsafety/data/d.py": "import jaxsafety.train.t as t\n",  # data -> train: up
            "jaxsafety/train/__init__.py": "",
            "jaxsafety/train/t.py": """\
                from jaxsafety.models._kernels import k
                from jaxsafety.models import m
                def g():
                    import jaxsafety.rl.r
                    return m._helper, m.f, jaxsafety.rl.r.h
                """,  # 1: private module of another package; 4: train -> rl in a function; 5: m._helper
            "jaxsafety/rl/__init__.py": "",
            "jaxsafety/rl/r.py": """\
                import envs.e
                from jaxsafety.data import d
                from experiments import x
                def h():
                    import importlib
                    return importlib.import_module("benchmarks.b")
                """,  # 3: library -> experiments; 6: library -> benchmarks through importlib
            "jaxsafety/alpha/__init__.py": "from jaxsafety.alpha.a import run\n",
            "jaxsafety/alpha/a.py": """\
                import jaxsafety.rl.r as r
                import envs
                from jaxsafety.beta import b
                from . import _private_module
                def run(): return r.h
                """,  # 3: study -> study; 4: its own private module is fine
            "jaxsafety/alpha/_private_module.py": "",
            "jaxsafety/beta/__init__.py": "",
            "jaxsafety/beta/b.py": "from jaxsafety.alpha import _private_module\n",  # study -> study and private
            "jaxsafety/gamma.py": "from jaxsafety.rl.r import h\n",  # a top-level module is a study: fine
            "envs/__init__.py": "",
            "envs/e.py": """\
                from jaxsafety.config import check
                from jaxsafety.rl import r
                """,  # envs -> rl: up
            "experiments/x.py": """\
                from jaxsafety.alpha import run
                from jaxsafety.beta import b
                from benchmarks import b as bench
                from jaxsafety.models.m import _helper
                """,  # apps may import every layer, but no private name
            "benchmarks/__init__.py": "",
            "benchmarks/b.py": "import experiments.x\n",
        },
    )
    got = {(v.path, v.line, v.kind) for v in check_imports(tmp_path)}
    expected = {
        ("jaxsafety/config.py", 1, "layer"),
        ("jaxsafety/models/m.py", 5, "layer"),
        ("jaxsafety/models/m2.py", 1, "private"),
        ("jaxsafety/data/d.py", 1, "layer"),
        ("jaxsafety/train/t.py", 1, "private"),
        ("jaxsafety/train/t.py", 4, "layer"),
        ("jaxsafety/train/t.py", 5, "private"),
        ("jaxsafety/rl/r.py", 3, "app"),
        ("jaxsafety/rl/r.py", 6, "app"),
        ("jaxsafety/alpha/a.py", 3, "study"),
        ("jaxsafety/beta/b.py", 1, "study"),
        ("jaxsafety/beta/b.py", 1, "private"),
        ("envs/e.py", 2, "layer"),
        ("experiments/x.py", 4, "private"),
    }
    assert got == expected, f"missing {expected - got}, unexpected {got - expected}"
    messages = {str(v) for v in check_imports(tmp_path)}
    assert (
        "jaxsafety/train/t.py:5: [private] jaxsafety.train.t uses the private name jaxsafety.models.m._helper"
        in (messages)
    )
