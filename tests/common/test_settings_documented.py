"""docs/SETTINGS.md names exactly the settings the code reads, with the code's defaults (issue 7).

The names come from parsing services/**/*.py with ``ast`` (nothing is imported or run):

- calls of an ``Env`` accessor (every public method of services/common/config.py's ``Env`` that
  takes a ``name``) on ``env``, on a parameter annotated ``Env``, on ``Env.from_os()``, or through
  a local alias such as ``positive = env.positive_int``;
- the setting name is a string constant, an f-string (``f"{upper}_LISTEN"``: a per-service
  pattern, ``<SERVICE>_LISTEN``), a local variable holding one, a loop variable over a tuple of
  constants, or a parameter of a helper (``listen_address(env, "WEB_METRICS_LISTEN")``), whose
  call sites are then read the same way;
- as a safety net, any call whose first argument is an upper-case constant inside a function
  with an ``env`` parameter or in a configuration module;
- raw environment reads (``os.environ.get``, ``env.values.get``: PGSSLMODE, DOCKER_HOST,
  CONFIDANT_POSTGRES_URL), in services/ and bin/, which the page must name.

A setting name the scanner cannot work out fails the test rather than being skipped, and the
failures list the missing names with where the code reads them.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from services.common.config import DEFAULT_PORTS, PREFIX, Env

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "SETTINGS.md"
SETTING = re.compile(r"^[A-Z][A-Z0-9_]+$")
SERVICE = "<SERVICE>"
# What <SERVICE> stands for in a pattern row: the gRPC services (the web edge has rows of its own).
SERVICES = tuple(service.upper() for service in DEFAULT_PORTS)
CONFIG_MODULES = {f"common/{name}.py" for name in ("config", "metrics", "aws", "db", "pgserver")}
RAW_READERS = {"os.environ.get", "os.getenv", "environ.get", "getenv"}
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
LITERALS = (ast.Tuple, ast.List, ast.Set)
NO_DEFAULT = object()
# Env's accessors: str, int, float, bool, path, optional, positive_int, positive_float, app_role, ...
ACCESSORS = frozenset(
    name for name, member in vars(Env).items()
    if not name.startswith("_") and callable(member)
    and list(inspect.signature(member).parameters)[1:2] == ["name"]
)


@dataclass(frozen=True)
class Read:
    name: str  # without CONFIDANT_ ("NOTIFY_BATCH_SIZE", "<SERVICE>_LISTEN")
    default: object  # the literal default, or NO_DEFAULT
    where: str


@dataclass(frozen=True)
class Helper:
    """A function that passes one of its parameters to an Env accessor as the setting's name."""

    index: int  # among its positional parameters, self included
    param: str
    method: bool


class Unresolved(Exception):
    pass


def _own_nodes(scope: ast.AST):
    """The nodes of a function (or module) outside its nested functions and classes."""
    for child in ast.iter_child_nodes(scope):
        if isinstance(child, (*FUNCTIONS, ast.Lambda, ast.ClassDef)):
            continue
        yield child
        yield from _own_nodes(child)


def _calls(scope: ast.AST) -> list[ast.Call]:
    return [node for node in _own_nodes(scope) if isinstance(node, ast.Call)]


def _params(scope: ast.AST) -> list[ast.arg]:
    if not isinstance(scope, FUNCTIONS):
        return []
    return [*scope.args.posonlyargs, *scope.args.args, *scope.args.kwonlyargs]


def _pairs(assign: ast.AST) -> list[tuple[ast.AST, ast.AST]]:
    """(target, value) of ``a = x`` and of each element of ``a, b = x, y``."""
    if not isinstance(assign, ast.Assign) or len(assign.targets) != 1:
        return []
    target, value = assign.targets[0], assign.value
    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
        return list(zip(target.elts, value.elts, strict=True))
    return [(target, value)]


def _argument(call: ast.Call, index: int, keyword: str) -> ast.AST | None:
    if len(call.args) > index and not isinstance(call.args[index], ast.Starred):
        return call.args[index]
    return next((kw.value for kw in call.keywords if kw.arg == keyword), None)


class Module:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        relative = path.relative_to(ROOT / "services").as_posix() if "services" in path.parts else ""
        self.configuration = relative.endswith("/config.py") or relative in CONFIG_MODULES
        # Module-level NAME = "literal" (a default may be spelled with one).
        self.constants = {
            name.id: expr.value for node in self.tree.body for name, expr in _pairs(node)
            if isinstance(name, ast.Name) and isinstance(expr, ast.Constant)
        }

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(ROOT)}:{node.lineno}"

    def literal(self, node: ast.AST | None) -> object:
        """A default spelled as a literal, constant arithmetic (7 * 86400) or a module constant."""
        if isinstance(node, ast.Name):
            return self.constants.get(node.id, NO_DEFAULT)
        simple = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop)
        if node is not None and all(isinstance(n, simple) for n in ast.walk(node)):
            return eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})
        return NO_DEFAULT


class Scope:
    """What one function (or a module's top level) knows: its Env objects, accessor aliases,
    local string variables and loop variables."""

    def __init__(self, module: Module, node: ast.AST) -> None:
        self.module, self.node = module, node
        self.params = [arg.arg for arg in _params(node)]
        self.envs = {
            arg.arg for arg in _params(node)
            if arg.arg == "env" or (arg.annotation and ast.unparse(arg.annotation).strip("'\"") == "Env")
        }
        self.aliases: set[str] = set()
        self.strings: dict[str, ast.AST] = {}
        self.loops: dict[str, list[ast.AST]] = {}
        for child in _own_nodes(node):
            for name, expr in _pairs(child):
                if not isinstance(name, ast.Name):
                    continue
                if self.is_env(expr):
                    self.envs.add(name.id)
                elif isinstance(expr, ast.Attribute) and expr.attr in ACCESSORS and self.is_env(expr.value):
                    self.aliases.add(name.id)
                elif isinstance(expr, (ast.Constant, ast.JoinedStr)):
                    self.strings[name.id] = expr
            for loop in [child] if isinstance(child, ast.For) else getattr(child, "generators", []):
                if isinstance(loop.target, ast.Name) and isinstance(loop.iter, LITERALS):
                    self.loops[loop.target.id] = list(loop.iter.elts)

    def is_env(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.envs
        return isinstance(node, ast.Call) and ast.unparse(node.func) in ("Env", "Env.from_os")

    def is_accessor_call(self, call: ast.Call) -> bool:
        func = call.func
        if isinstance(func, ast.Attribute):
            return func.attr in ACCESSORS and self.is_env(func.value)
        return isinstance(func, ast.Name) and func.id in self.aliases

    def is_raw_read(self, call: ast.Call) -> bool:
        """os.environ.get("X"), or env.values.get("X") (the variable itself, without CONFIDANT_)."""
        func = call.func
        return ast.unparse(func) in RAW_READERS or (
            isinstance(func, ast.Attribute) and func.attr == "get" and isinstance(func.value, ast.Attribute)
            and func.value.attr == "values" and self.is_env(func.value.value)
        )

    def names(self, node: ast.AST | None, helpers: dict[str, Helper]) -> list[str]:
        """The setting name(s) ``node`` stands for; a parameter makes this function a helper."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SETTING.match(node.value):
            return [node.value]
        if isinstance(node, ast.JoinedStr):
            parts = [part.value if isinstance(part, ast.Constant) else SERVICE for part in node.values]
            pattern = "".join(parts)
            if re.fullmatch(r"(<SERVICE>_)?[A-Z0-9_]+", pattern):
                return [pattern]
        if isinstance(node, ast.Name):
            if node.id in self.strings:
                return self.names(self.strings[node.id], helpers)
            if node.id in self.loops:
                return [name for element in self.loops[node.id] for name in self.names(element, helpers)]
            if node.id in self.params:
                method = self.params[0] in ("self", "cls")
                helpers[self.node.name] = Helper(self.params.index(node.id), node.id, method)
                return []
        what = "nothing" if node is None else repr(ast.unparse(node))
        line = self.module.where(node) if node is not None else self.module.where(self.node)
        raise Unresolved(f"{line}: cannot tell which setting {what} names")


def _helper_argument(call: ast.Call, helpers: dict[str, Helper]) -> tuple[str, ast.AST | None] | None:
    func = call.func
    called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    helper = helpers.get(called)
    if helper is None:
        return None
    index = helper.index - (1 if helper.method and isinstance(func, ast.Attribute) else 0)
    return called, _argument(call, index, helper.param)


def scan() -> tuple[list[Read], dict[str, list[str]]]:
    """(every Env read, every raw environment read: variable -> where)."""
    modules = [Module(path) for path in sorted((ROOT / "services").rglob("*.py"))]
    scopes = [
        Scope(module, node) for module in modules
        for node in [module.tree, *(n for n in ast.walk(module.tree) if isinstance(n, FUNCTIONS))]
    ]
    reads: list[Read] = []
    raw: dict[str, list[str]] = defaultdict(list)
    helpers: dict[str, Helper] = {}
    for scope in scopes:
        module = scope.module
        safety_net = "env" in scope.params or module.configuration
        for call in _calls(scope.node):
            first = _argument(call, 0, "name")
            if scope.is_raw_read(call):
                if not isinstance(first, ast.Constant):
                    raise Unresolved(f"{module.where(call)}: cannot tell which variable {ast.unparse(call)} "
                                     "reads")
                raw[first.value].append(module.where(call))
            elif scope.is_accessor_call(call):
                default = module.literal(_argument(call, 1, "default"))
                reads += [Read(name, default, module.where(call)) for name in scope.names(first, helpers)]
            elif (safety_net and isinstance(first, ast.Constant) and isinstance(first.value, str)
                  and SETTING.match(first.value)):
                reads.append(Read(first.value, NO_DEFAULT, module.where(call)))
    # Helpers' call sites name the setting (and may be helpers themselves): repeat until none is new.
    done: set[str] = set()
    while new := set(helpers) - done:
        done |= new
        for scope in scopes:
            for call in _calls(scope.node):
                found = _helper_argument(call, helpers)
                if found and found[0] in new and found[1] is not None:
                    where = scope.module.where(call)
                    reads += [Read(name, NO_DEFAULT, where) for name in scope.names(found[1], helpers)]
    for path in sorted((ROOT / "bin").glob("*.py")):
        module = Module(path)
        for call in (n for n in ast.walk(module.tree) if isinstance(n, ast.Call)):
            if ast.unparse(call.func) in RAW_READERS and isinstance(call.args[0], ast.Constant):
                raw[call.args[0].value].append(module.where(call))
    return reads, dict(raw)


def table() -> dict[str, list[str]]:
    """The page's one settings table: full variable name -> its cells."""
    lines = [line.strip() for line in DOC.read_text().splitlines() if line.startswith("|")]
    assert lines, "docs/SETTINGS.md has no table"
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["service", "variable", "default", "meaning"], header
    rows: dict[str, list[str]] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 4, f"a row needs 4 cells (a | inside a cell? a second table?): {line}"
        match = re.fullmatch(r"`(CONFIDANT_[A-Z0-9_<>]+)`", cells[1])
        assert match, f"one full variable name per row (no shorthand), not {cells[1]!r}"
        assert match.group(1) not in rows, f"{match.group(1)} has two rows"
        rows[match.group(1)] = cells
    return rows


def documented_as(name: str, rows: dict[str, list[str]]) -> str | None:
    """The row documenting ``name``: its own, or the <SERVICE> pattern row it is one case of."""
    if name in rows:
        return name
    cases = (row for row in rows if SERVICE in row and name in {row.replace(SERVICE, s) for s in SERVICES})
    return next(cases, None)


def test_scanner_finds_the_settings_read_every_way():
    """Guards the guard: each way the code reads a setting is still recognised."""
    reads, raw = scan()
    names = {read.name for read in reads}
    expected = {
        "NOTIFY_BATCH_SIZE",  # env.int
        "SESSION_IDLE_SECONDS",  # positive = env.positive_int
        "WEB_RPC_DEADLINE_SECONDS",  # positive_int, positive_float = env.positive_int, env.positive_float
        "NOTIFY_DATABASE_URL",  # Env.from_os().str
        "GRPC_TLS_CA_FILE",  # a loop over a tuple of names
        "WEB_SNS_TOPIC_ARNS",  # a helper's parameter
        "WEB_METRICS_LISTEN",  # listen_address(env, NAME)
        "<SERVICE>_ADDR", "<SERVICE>_LISTEN", "<SERVICE>_HEALTH_LISTEN",  # f-strings
        "<SERVICE>_METRICS_LISTEN",  # an f-string in a local variable
    }
    assert expected <= names, sorted(expected - names)
    assert {"PGSSLMODE", "DOCKER_HOST", "CONFIDANT_POSTGRES_URL"} <= set(raw), raw
    assert len(names) > 90, len(names)


def test_every_setting_read_has_a_row_and_every_row_is_read():
    reads, _ = scan()
    read = {PREFIX + r.name for r in reads}
    rows = table()
    missing = sorted(name for name in read if documented_as(name, rows) is None)
    assert not missing, "settings the code reads that docs/SETTINGS.md's table lacks:\n" + "\n".join(
        f"  {name} ({', '.join(r.where for r in reads if PREFIX + r.name == name)})" for name in missing)
    stale = sorted(set(rows) - {documented_as(name, rows) for name in read})
    assert not stale, f"rows of docs/SETTINGS.md that no code reads: {stale}"


def test_other_variables_are_named_and_the_prose_names_no_stale_setting():
    reads, raw = scan()
    text = DOC.read_text()
    unnamed = sorted(name for name in raw if f"`{name}`" not in text)
    assert not unnamed, f"environment variables the code reads that docs/SETTINGS.md does not name: {unnamed}"
    known = {PREFIX + r.name for r in reads} | set(raw)
    known |= {name.replace(SERVICE, s) for name in known for s in SERVICES}
    mentioned = set(re.findall(r"CONFIDANT_[A-Z0-9_<>]*[A-Z0-9>]", text)) - {"CONFIDANT_<NAME>"}
    stale = sorted(name for name in mentioned
                   if name not in known and name.removesuffix("_FILE") not in known)
    assert not stale, f"docs/SETTINGS.md names settings that no code reads: {stale}"


def test_documented_defaults_match_the_code():
    reads, _ = scan()
    rows = table()
    wrong = []
    for read in reads:
        row = documented_as(PREFIX + read.name, rows)
        if read.default is NO_DEFAULT or read.default in ("", None) or row is None:
            continue  # no literal default (or no row: the test above names it)
        cell = rows[row][2]
        if isinstance(read.default, bool):
            ok = f"`{str(read.default).lower()}`" in cell
        elif isinstance(read.default, int | float):
            ok = read.default in {float(n) for n in re.findall(r"\d+(?:\.\d+)?", cell)}
        else:
            ok = f"`{read.default}`" in cell
        if not ok:
            wrong.append(f"{PREFIX}{read.name}: the code's default is {read.default!r} ({read.where}); "
                         f"the page says {cell!r}")
    assert not wrong, "\n".join(wrong)
