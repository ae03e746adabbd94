"""Typed, frozen, validated configs and the one CLI layer that builds them.

Every config in jaxsafety is a ``@dataclasses.dataclass(frozen=True)``: hashable, so it can be a static argument
under ``jax.jit``, and validated in ``__post_init__`` with the ``check_*`` helpers below, which raise
:class:`ConfigError` naming the field, the bad value and the accepted values.

:func:`parse_cli` turns such a dataclass (nested dataclasses included) into a command line::

    python experiments/ppo_gymnax.py --smoke --num-seeds 8 --optim.lr 3e-4 --config overrides.yaml

Why not tyro: its errors are multi-line boxes; we want a bad value to exit with *one* line naming the field and the
accepted values, before any compute starts or any file is written. The mapping from fields to flags is the same
(``--a.b.c`` for nested fields; ``-`` and ``_`` are interchangeable).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

__all__ = [
    "ConfigError",
    "Subcommand",
    "check",
    "check_choice",
    "check_range",
    "concrete_or_none",
    "config_from_dict",
    "config_to_dict",
    "first_bad",
    "format_number",
    "option",
    "parse_cli",
    "print_table",
    "run_subcommands",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config field holds a value outside its accepted set.

    ``str(err)`` is a single line: ``<field>=<value>: accepted values are <accepted>``.
    """

    def __init__(self, field: str, value: Any, accepted: str):
        self.field, self.value, self.accepted = field, value, accepted
        super().__init__(f"{field}={value!r} is invalid: accepted values are {accepted}")

    def with_prefix(self, prefix: str) -> ConfigError:
        """The same error with the field path prefixed (used when a nested config fails)."""
        return ConfigError(f"{prefix}.{self.field}", self.value, self.accepted)


def check(ok: bool, field: str, value: Any, accepted: str) -> None:
    """Raise :class:`ConfigError` unless ``ok``."""
    if not ok:
        raise ConfigError(field, value, accepted)


def check_choice(field: str, value: Any, choices: Sequence[Any]) -> None:
    """``value`` must be one of ``choices``."""
    check(value in choices, field, value, "one of " + ", ".join(repr(c) for c in choices))


def first_bad(field: str, bad: Any, values: Any, accepted: str) -> None:
    """Raise :class:`ConfigError` for the first ``True`` entry of the boolean array ``bad``, naming
    ``field[i, ...]`` (just ``field`` for a scalar) and that entry of ``values``; do nothing if none is bad."""
    import numpy as np

    bad, values = np.asarray(bad), np.asarray(values)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        name = f"{field}[{', '.join(map(str, idx))}]" if idx else field
        value = values[idx] if idx else values[()]
        if isinstance(value, np.generic) and np.issubdtype(value.dtype, np.number):
            value = int(value) if np.isfinite(value) and float(value).is_integer() else float(value)
        else:
            value = value.item() if isinstance(value, np.generic) else value
        raise ConfigError(name, value, accepted)


def format_number(x: float | None, spec: str = ".4g") -> str:
    """``x`` formatted with ``spec``, or ``-`` for None / NaN / inf (table cells)."""
    import math

    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a left-aligned text table (a header, a rule, the rows) to stdout."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for cells in (header, ["-" * w for w in widths], *rows):
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())


def concrete_or_none(x: object) -> Any:
    """``x`` as a numpy array, or None when it is a JAX tracer (inside jit / vmap / grad): input checks validate
    concrete inputs and let traced ones through (jax is imported only when this is called)."""
    import jax
    import numpy as np

    return None if isinstance(x, jax.core.Tracer) else np.asarray(x)


def check_range(
    field: str,
    value: float | int,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    integer: bool = False,
) -> None:
    """``value`` must lie in the given (half-)open interval; ``integer=True`` also requires an int."""
    parts = []
    if gt is not None:
        parts.append(f"> {gt}")
    if ge is not None:
        parts.append(f">= {ge}")
    if lt is not None:
        parts.append(f"< {lt}")
    if le is not None:
        parts.append(f"<= {le}")
    accepted = ("integers " if integer else "numbers ") + " and ".join(parts) if parts else "numbers"
    is_num = isinstance(value, int | float) and not isinstance(value, bool)
    if integer and not isinstance(value, int | bool):
        is_num = False
    ok = is_num and (
        (gt is None or value > gt)
        and (ge is None or value >= ge)
        and (lt is None or value < lt)
        and (le is None or value <= le)
    )
    check(ok, field, value, accepted)


# ----------------------------------------------------------------------------------------------------------------
# dict <-> config


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (JSON-serialisable for the usual field types) of a dataclass config."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build ``cls`` from a nested dict, recursing into nested dataclass fields.

    Unknown keys and failed ``__post_init__`` checks raise :class:`ConfigError` with the full dotted field path.
    """
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        path = f"{prefix}{unknown[0]}"
        raise ConfigError(path, data[unknown[0]], "fields " + ", ".join(prefix + k for k in sorted(fields)))
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp, _ = _unwrap_optional(hints[name])
        if _is_dataclass_type(tp) and isinstance(value, Mapping):
            value = config_from_dict(tp, value, prefix=f"{prefix}{name}.")
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        elif tp is Path and isinstance(value, str):  # a path from a JSON / YAML file
            value = Path(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if prefix and not err.field.startswith(prefix):
            raise err.with_prefix(prefix.rstrip(".")) from None
        raise


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_overrides(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML file of (nested) config overrides."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError("--config", str(path), "a JSON/YAML file holding a mapping of field -> value")
    return data


# ----------------------------------------------------------------------------------------------------------------
# CLI


def option(default: Any = dataclasses.MISSING, *, help: str) -> Any:
    """A config field with the help text its command-line flag shows: ``steps: int = option(10, help="...")``;
    without ``default`` the field (and its flag) is required."""
    return dataclasses.field(default=default, metadata={"help": help})


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors on one line (``error: ...``) and exits with status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {_one_line(message)}\n")


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def _scalar_parser(tp: Any, flag: str) -> tuple[Callable[[str], Any], str]:
    """A str -> value converter for one scalar type, and the metavar/accepted-values text."""
    tp, optional = _unwrap_optional(tp)

    def wrap(fn: Callable[[str], Any], accepted: str) -> tuple[Callable[[str], Any], str]:
        def conv(s: str) -> Any:
            if optional and s.lower() in ("none", "null"):
                return None
            try:
                return fn(s)
            except (ValueError, TypeError):
                raise argparse.ArgumentTypeError(
                    f"{s!r} is invalid: accepted values are {accepted}{' or none' if optional else ''}"
                ) from None

        return conv, accepted

    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        by_str = {str(c): c for c in choices}

        def lit(s: str) -> Any:
            if s not in by_str:
                raise ValueError(s)
            return by_str[s]

        return wrap(lit, "one of " + ", ".join(map(str, choices)))
    if tp is bool:

        def boolean(s: str) -> bool:
            if s.lower() in _TRUE:
                return True
            if s.lower() in _FALSE:
                return False
            raise ValueError(s)

        return wrap(boolean, "true or false")
    if tp is int:
        return wrap(int, "an integer")
    if tp is float:
        return wrap(float, "a number")
    if tp is str:
        return wrap(str, "a string")
    if tp is Path:
        return wrap(Path, "a path")
    raise TypeError(f"parse_cli: field {flag} has unsupported type {tp!r}")


def _add_fields(parser: argparse.ArgumentParser, cls: type, path: str, dests: dict[str, str]) -> None:
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        inner, _ = _unwrap_optional(tp)
        full = f"{path}{f.name}"
        if _is_dataclass_type(inner):
            _add_fields(parser, inner, full + ".", dests)
            continue
        dest = "cfg__" + full.replace(".", "__")
        dests[dest] = full
        flags = [f"--{full}"]
        if "_" in full:
            flags.insert(0, "--" + full.replace("_", "-"))  # the spelling shown in help and errors
        helptext = f.metadata.get("help", "")
        required = _is_required(f)
        if typing.get_origin(inner) is tuple:
            args = typing.get_args(inner)
            elem = args[0]
            conv, accepted = _scalar_parser(elem, flags[0])
            nargs: Any = "*" if (len(args) == 2 and args[1] is Ellipsis) else len(args)
            text = f"{helptext} ({accepted}, ...)".strip()
            parser.add_argument(*flags, dest=dest, type=conv, nargs=nargs, help=text, metavar=f.name.upper())
        else:
            conv, accepted = _scalar_parser(tp, flags[0])
            kw: dict[str, Any] = {}
            if inner is bool:
                kw = {"nargs": "?", "const": True}
            text = f"{helptext} [{accepted}{'; required' if required else ''}]".strip()
            parser.add_argument(*flags, dest=dest, type=conv, help=text, metavar=f.name.upper(), **kw)


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _set_path(d: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        if not isinstance(d.get(k), dict):
            d[k] = {}
        d = d[k]
    d[keys[-1]] = value


def _add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, presets: Mapping[str, Any]
) -> dict[str, str]:
    """``--config``, ``--print-config``, one flag per preset and one per (nested) field of ``cls``; returns the
    argparse dest -> dotted field path map."""
    parser.add_argument(
        "--config", dest="_config_file", metavar="FILE", help="JSON/YAML file of config overrides"
    )
    parser.add_argument("--print-config", dest="_print_config", action="store_true", help="print and exit")
    for name in presets:
        parser.add_argument(f"--{name}", dest=f"_preset_{name}", action="store_true", help=f"{name} preset")
    dests: dict[str, str] = {}
    _add_fields(parser, cls, "", dests)
    return dests


def _config_from_args(
    parser: argparse.ArgumentParser,
    cls: type[T],
    ns: Mapping[str, Any],
    dests: Mapping[str, str],
    presets: Mapping[str, T],
) -> T:
    """The validated ``cls`` from parsed arguments: defaults < preset < ``--config`` file < flags. Any bad value
    (a failed check, a missing required field, an unreadable ``--config`` file) exits with status 2 and one
    line; ``--print-config`` prints the config as JSON and exits with status 0."""
    chosen = [n for n in presets if ns.get(f"_preset_{n}")]
    if len(chosen) > 1:
        parser.error(f"choose at most one preset of {', '.join('--' + n for n in presets)} (got {chosen})")
    if chosen:
        base = config_to_dict(presets[chosen[0]])
    else:
        try:  # start from the defaults so nested non-default instances survive partial overrides
            base = config_to_dict(cls())
        except TypeError:  # required fields: they must come from --config or flags
            base = {}
    try:
        if "_config_file" in ns:
            base = _merge(base, load_overrides(ns["_config_file"]))
        overrides: dict[str, Any] = {}
        for dest, full in dests.items():
            if dest in ns:
                value = ns[dest]
                _set_path(overrides, full, list(value) if isinstance(value, list) else value)
        merged = _merge(base, overrides)
        missing = [
            f.name for f in dataclasses.fields(cls) if f.init and _is_required(f) and f.name not in merged
        ]
        if missing:
            flags = ", ".join("--" + name.replace("_", "-") for name in missing)
            parser.error(f"the following arguments are required: {flags}")
        cfg = config_from_dict(cls, merged)
    except (ConfigError, OSError, ValueError) as err:
        parser.exit(2, f"error: {_one_line(err)}\n")
    if ns.get("_print_config"):
        print(json.dumps(config_to_dict(cfg), indent=2, default=str))
        parser.exit(0)
    return cfg


def parse_cli(
    cls: type[T],
    argv: Sequence[str] | None = None,
    *,
    presets: Mapping[str, T] | None = None,
    description: str | None = None,
) -> T:
    """Build a validated ``cls`` instance from the command line.

    Precedence (later wins): the class defaults, a preset (``--smoke`` etc., from ``presets``), a ``--config``
    JSON/YAML file, then ``--field value`` flags. Fields without a default are required. Any bad value exits
    with status 2 and one line on stderr::

        error: optim.lr=-1.0 is invalid: accepted values are numbers > 0
    """
    presets = dict(presets or {})
    parser = _OneLineParser(
        description=description or (cls.__doc__ or "").strip(),
        argument_default=argparse.SUPPRESS,
    )
    dests = _add_config_arguments(parser, cls, presets)
    return _config_from_args(parser, cls, vars(parser.parse_args(argv)), dests, presets)


class Subcommand(NamedTuple):
    """One command of :func:`run_subcommands`.

    ``config``: a frozen config dataclass whose fields are the command's flags (as in :func:`parse_cli`; its
    ``__post_init__`` checks every value). ``load``: optional, ``config -> inputs``: reads and checks the input
    files before anything is computed or written. ``run``: computes, prints and writes; called as
    ``run(config)``, or ``run(config, load(config))`` with ``load``; returns the exit status (None: 0).
    ``help``: one line for the command list."""

    config: type
    run: Callable[..., int | None]
    load: Callable[[Any], Any] | None = None
    help: str = ""


def run_subcommands(
    prog: str,
    commands: Mapping[str, Subcommand],
    argv: Sequence[str] | None = None,
    *,
    description: str | None = None,
) -> int:
    """``prog COMMAND --field value ...``: parse the command's config, load its inputs, run it; returns the exit
    status (``sys.exit(run_subcommands(...))`` in ``__main__``).

    Each command's flags come from its config exactly as :func:`parse_cli` makes them (``--field value``,
    ``--config FILE``, ``--print-config``). Bad input exits with status 2 and one line ``error: ...`` on stderr,
    before anything is computed or written: a flag argparse rejects, a value the config's checks reject, a
    missing required flag, and a :class:`ConfigError`, ``ValueError`` or ``OSError`` raised by ``load`` (e.g. a
    CSV cell, a missing file). A :class:`ConfigError` raised by ``run`` also gives status 2 (by contract the
    library raises it for bad input before it computes); other exceptions from ``run`` propagate (a traceback
    is a bug, not bad input). ``--help`` (status 0) lists the commands, ``COMMAND --help`` their flags."""
    parser = _OneLineParser(prog=prog, description=description, argument_default=argparse.SUPPRESS)
    sub = parser.add_subparsers(
        dest="_command", metavar="COMMAND", required=True, parser_class=_OneLineParser
    )
    parsers, dests = {}, {}
    for name, cmd in commands.items():
        parsers[name] = sub.add_parser(
            name,
            help=cmd.help,
            description=cmd.help or (cmd.config.__doc__ or "").strip(),
            argument_default=argparse.SUPPRESS,
        )
        dests[name] = _add_config_arguments(parsers[name], cmd.config, {})
    try:
        ns = vars(parser.parse_args(argv))
        name = ns.pop("_command")
        cmd = commands[name]
        cfg = _config_from_args(parsers[name], cmd.config, ns, dests[name], {})
    except SystemExit as done:  # --help, --print-config or one line of bad input
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    if cmd.load is None:
        call = functools.partial(cmd.run, cfg)
    else:
        try:
            inputs = cmd.load(cfg)
        except (ConfigError, OSError, ValueError) as err:
            return _bad_input(err)
        call = functools.partial(cmd.run, cfg, inputs)
    try:
        status = call()
    except ConfigError as err:
        return _bad_input(err)
    return 0 if status is None else int(status)


def _bad_input(err: BaseException) -> int:
    print(f"error: {_one_line(err)}", file=sys.stderr)
    return 2
