"""One loader for every configuration dataclass (the training run, the reward, the judge, the embedder, the
evaluation tasks): values from YAML or ``--section.key=value`` are converted and checked by the field's
annotation (bool, int, float, str, Path, Literal, lists, Optional, nested dataclasses) and by its bounds,
before anything else runs. A bad value raises :class:`~medix_r1.errors.ConfigError` naming the dotted key,
the value and what is allowed.

A field is declared once, with its help text and bounds, by :func:`option`; ``--print-config`` prints the
help (:func:`render`). Dataclasses written elsewhere with ``field(metadata={"help": ...})`` load the same way,
their own ``__post_init__`` checks wrapped into a ConfigError that names the section.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union

from medix_r1.errors import ConfigError

__all__ = [
    "add_override_options",
    "apply_overrides",
    "bad_value",
    "build",
    "check_fields",
    "collect_overrides",
    "combine",
    "convert",
    "load_yaml",
    "option",
    "option_keys",
    "parse_value",
    "redacted",
    "render",
    "short",
    "to_dict",
]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Any = MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    allow_inf: bool = False,
) -> Any:
    """A dataclass field with its help text (one line, shown by ``--print-config``) and optional bounds
    (checked by :func:`check_fields` and :func:`build`). A float field takes finite numbers only unless
    ``allow_inf`` (then ``.inf`` / ``inf`` mean "no limit"); NaN is never a value."""
    meta: dict[str, Any] = {"help": help}
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if bounds:
        meta["bounds"] = bounds
    if allow_inf:
        meta["allow_inf"] = True
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


SHORT = 80  # characters of a value quoted in an error message


def short(value: Any, limit: int = SHORT) -> str:
    """``repr(value)`` cut to ``limit`` characters (an error message quotes a value, never a whole file);
    a huge container is summarised without being rendered in full."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, (str, bytes)) and len(value) > 4 * limit:
        value = value[: 4 * limit]
    try:
        text = repr(value)
    except RecursionError:
        return f"<nested {type(value).__name__}>"
    if "://" in text:  # never quote a URL's credentials
        from medix_r1.llm.remote import redact_urls

        text = redact_urls(text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def bad_value(key: str, value: Any, allowed: str) -> ConfigError:
    """The one ConfigError shape: ``key: got VALUE; allowed: ALLOWED`` (the value cut short)."""
    return ConfigError(
        f"{key}: got {short(value)}; allowed: {allowed}", key=key, value=value, allowed=allowed
    )


# -- YAML, bounded -----------------------------------------------------------------------------------------

MAX_YAML_BYTES = 4 << 20  # a config or task file larger than this is refused unread
MAX_YAML_ALIASES = 1000  # aliases (*name) in one document
MAX_YAML_NODES = 200_000  # nodes of the document with every alias expanded
MAX_YAML_CHARS = 16 << 20  # scalar characters of the document with every alias expanded


def _expanded_size(root: Any, where: str) -> None:
    """Refuse a composed YAML node graph whose alias-expanded size passes the bounds, before any Python
    object is built (a "billion laughs" file is a few hundred bytes and expands to gigabytes)."""
    import yaml

    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, chars) when expanded
    on_path: set[int] = set()
    aliases = 0

    def walk(node: Any) -> tuple[int, int]:
        nonlocal aliases
        key = id(node)
        if key in sizes:
            aliases += 1  # a node reached again: an alias (or a merge of one)
            if aliases > MAX_YAML_ALIASES:
                raise ConfigError(
                    f"{where}: more than {MAX_YAML_ALIASES} YAML aliases; write the values out",
                    value=where,
                    allowed=f"<= {MAX_YAML_ALIASES} aliases",
                )
            return sizes[key]
        if key in on_path:
            raise ConfigError(f"{where}: a YAML alias refers to itself (recursive structure)", value=where)
        if isinstance(node, yaml.ScalarNode):
            out = (1, len(node.value))
        else:
            on_path.add(key)
            n, c = 1, 0
            children = (
                [x for kv in node.value for x in kv] if isinstance(node, yaml.MappingNode) else node.value
            )
            for child in children:
                cn, cc = walk(child)
                n, c = n + cn, c + cc
                if n > MAX_YAML_NODES or c > MAX_YAML_CHARS:
                    raise ConfigError(
                        f"{where}: the YAML expands to more than {MAX_YAML_NODES} values or "
                        f"{MAX_YAML_CHARS >> 20} MiB of text (aliases nested too deep?)",
                        value=where,
                        allowed=f"<= {MAX_YAML_NODES} values after alias expansion",
                    )
            on_path.discard(key)
            out = (n, c)
        sizes[key] = out
        return out

    walk(root)


def load_yaml(source: str | Path, *, text: str | None = None) -> Any:
    """One YAML document read safely and within bounds: file size, alias count and alias-expanded size are
    checked on the composed node graph before any object is built; plain tags only (no ``!!python/...``).
    A bad file raises ConfigError naming it, with no more than a short quote of its content."""
    import yaml

    where = str(source)
    if text is None:
        p = Path(source)
        if not p.is_file():
            raise ConfigError(f"file not found: {p}", value=where)
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(
                f"{p}: {size} bytes; a YAML file may have at most {MAX_YAML_BYTES >> 20} MiB", value=where
            )
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})", value=where) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        why = " ".join(str(e).split())  # one line
        why = why if len(why) <= 300 else why[:297] + "..."
        raise ConfigError(f"{where}: not valid YAML: {why}", value=where) from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply", value=where) from None
    finally:
        loader.dispose()


# -- annotations -------------------------------------------------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of ``cls`` (a field whose annotation cannot be resolved, e.g. a name imported
    only for type checking, is left unchecked)."""
    if cls not in _HINTS:
        try:
            _HINTS[cls] = typing.get_type_hints(cls)
        except Exception:
            import sys

            ns = dict(vars(sys.modules.get(cls.__module__, object())))
            out: dict[str, Any] = {}
            for f in fields(cls):
                try:
                    out[f.name] = eval(f.type, ns) if isinstance(f.type, str) else f.type
                except Exception:
                    out[f.name] = Any
            _HINTS[cls] = out
    return _HINTS[cls]


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass an annotation such as ``JudgeConfig | None`` holds, else None."""
    if isinstance(tp, type) and is_dataclass(tp):
        return tp
    if _is_union(tp):
        for a in typing.get_args(tp):
            if isinstance(a, type) and is_dataclass(a):
                return a
    return None


def describe(tp: Any) -> str:
    """What an annotation allows, in words (the ``allowed`` of a ConfigError)."""
    if tp is Any:
        return "anything"
    if _is_union(tp):
        parts = [describe(a) for a in typing.get_args(tp) if a is not type(None)]
        if type(None) in typing.get_args(tp):
            parts.append("null")
        return " or ".join(parts)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {describe(args[0]) if args else 'values'}"
    if origin in (dict, Mapping):
        return "a mapping"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a finite number"
    if tp is str:
        return "a string"
    if tp is Path:
        return "a path"
    if isinstance(tp, type) and is_dataclass(tp):
        return f"a mapping of {tp.__name__} options"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _convert(value: Any, tp: Any) -> Any:
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        # An exact type match first, so "3" stays a str in ``str | int`` and 3 an int in ``int | str``.
        for a in args:
            if a is not type(None) and isinstance(a, type) and type(value) is a:
                return _convert(value, a)  # still checked (a float must be finite)
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a)
            except _Mismatch:
                continue
        raise _Mismatch
    if value is None:
        raise _Mismatch
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return [_convert(v, inner) for v in value]
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            v = float(value)
        elif isinstance(value, str):
            try:
                v = float(value.strip())
            except ValueError:
                raise _Mismatch from None
        else:
            raise _Mismatch
        if not math.isfinite(v):
            raise _Mismatch  # inf only where a field allows it (_convert_field)
        return v
    if tp is str or tp is Path:
        # YAML reads an unquoted 2024 or 1.5 as a number; as a name or path it is still that text.
        if isinstance(value, (str, Path)) or (
            isinstance(value, (int, float)) and not isinstance(value, bool)
        ):
            return Path(str(value)) if tp is Path else str(value)
        raise _Mismatch
    if isinstance(tp, type) and is_dataclass(tp):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value


def convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` as annotation ``tp`` asks (``"3"`` -> 3 for an int, ``"no"`` -> False for a bool), or a
    ConfigError naming ``key``."""
    try:
        return _convert(value, tp)
    except _Mismatch:
        raise bad_value(key, value, describe(tp)) from None


def _infinite(value: Any) -> float | None:
    if isinstance(value, float) and math.isinf(value):
        return value
    if isinstance(value, str) and value.strip().lower().lstrip("+-.") in ("inf", "infinity"):
        return float(value.strip().replace(".", ""))
    return None


def _convert_field(f: dataclasses.Field, value: Any, tp: Any, key: str) -> Any:
    """:func:`convert` for field ``f``, then its bounds."""
    meta: Mapping[str, Any] = f.metadata or {}
    inf = _infinite(value) if meta.get("allow_inf") else None
    new = inf if inf is not None else convert(value, tp, key)
    bounds = meta.get("bounds")
    if bounds and new is not None:
        _check_bounds(new, bounds, key)
    return new


def _check_bounds(value: Any, bounds: Mapping[str, float], key: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    ok = {
        "ge": lambda b: value >= b,
        "gt": lambda b: value > b,
        "le": lambda b: value <= b,
        "lt": lambda b: value < b,
    }
    if not all(ok[k](b) for k, b in bounds.items()):
        raise bad_value(key, value, " and ".join(f"{words[k]} {b}" for k, b in bounds.items()))


def check_fields(obj: Any, section: str) -> None:
    """Convert every field of dataclass instance ``obj`` to its annotation and check its bounds, in place;
    ``section`` prefixes the keys in errors (``lora`` -> ``lora.enabled``). Call it from ``__post_init__``."""
    hints = _hints(type(obj))
    errors: list[ConfigError] = []
    for f in fields(obj):
        key = f"{section}.{f.name}" if section else f.name
        tp = hints.get(f.name, Any)
        value = getattr(obj, f.name)
        if _dataclass_in(tp) is not None and isinstance(value, Mapping):
            continue  # a nested section given as a mapping; its class builds and checks it
        try:
            new = _convert_field(f, value, tp, key)
        except ConfigError as e:
            errors.append(e)
            continue
        if new is not value:
            object.__setattr__(obj, f.name, new)
    if errors:
        raise combine(errors)


# -- building ----------------------------------------------------------------------------------------------


def _rekey(e: ConfigError, prefix: str) -> ConfigError:
    """An error raised by a section's own checks, its key made absolute (``threshold`` -> ``reward.embed.
    threshold``)."""
    key = e.key or ""
    if not prefix or key == prefix or key.startswith(prefix + "."):
        return e
    full = f"{prefix}.{key.rsplit('.', 1)[-1]}" if key else prefix
    if e.allowed is not None:
        return bad_value(full, e.value, e.allowed)
    return ConfigError(f"{prefix}: {e}", key=full, value=e.value, allowed=e.allowed)


def combine(errors: list[ConfigError]) -> ConfigError:
    """One ConfigError reporting every error of ``errors`` (one line each, like pydantic's report); its
    ``errors`` attribute keeps them, its key/value/allowed are the first one's."""
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    lines = "\n".join(f"  {e}" for e in errors)
    out = ConfigError(
        f"{len(errors)} errors in the configuration:\n{lines}",
        key=first.key,
        value=first.value,
        allowed=first.allowed,
    )
    out.errors = list(errors)  # type: ignore[attr-defined]
    return out


def _flatten(e: ConfigError) -> list[ConfigError]:
    return list(getattr(e, "errors", None) or [e])


def closest(name: str, known: list[str]) -> str:
    """``"did you mean X? "`` for the known name closest to ``name`` (difflib), or ``""``."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {close[0]}? " if close else ""


def _unknown_key(key: str, name: str, known: list[str], value: Any, what: str = "key") -> ConfigError:
    label = key if len(key) <= 80 else key[:77] + "..."
    return ConfigError(
        f"{label}: unknown {what}; {closest(name, known)}known: {', '.join(known)}",
        key=key,
        value=value,
        allowed=", ".join(known),
    )


def _build(
    cls: type,
    data: Any,
    prefix: str,
    prepare: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]] | None,
    errors: list[ConfigError],
) -> Any:
    """:func:`build`'s work, every error appended to ``errors``; the instance, or None after an error."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        errors.append(bad_value(prefix or cls.__name__, data, "a mapping of options"))
        return None
    d = dict(data)
    if prepare and prefix in prepare:
        try:
            d = prepare[prefix](d)
        except ConfigError as e:
            errors.extend(_flatten(e))
            return None
    n_before = len(errors)
    hints = _hints(cls)
    flds = {f.name: f for f in fields(cls) if f.init}
    kw: dict[str, Any] = {}
    # The top level of a file made of sections (the run file): an unknown name there is a section.
    sections = not prefix and any(_dataclass_in(hints.get(n)) is not None for n in flds)
    for name, value in d.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in flds:
            what = "section" if sections else "key"
            errors.append(_unknown_key(key, str(name), list(flds), value, what))
            continue
        tp = hints.get(name, Any)
        sub = _dataclass_in(tp)
        if sub is not None and isinstance(value, Mapping):
            kw[name] = _build(sub, value, key, prepare, errors)
            continue
        try:
            kw[name] = _convert_field(flds[name], value, tp, key)
        except ConfigError as e:
            errors.append(e)
    if len(errors) > n_before:
        return None  # the section's own checks run once its fields are right
    try:
        return cls(**kw)
    except ConfigError as e:
        errors.extend(_rekey(x, prefix) for x in _flatten(e))
    except (TypeError, ValueError) as e:
        # A check of a dataclass written elsewhere (its __post_init__): name the section at least.
        errors.append(ConfigError(f"{prefix or cls.__name__}: {e}", key=prefix or None))
    return None


def build(
    cls: type,
    data: Mapping[str, Any] | None,
    prefix: str = "",
    *,
    prepare: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]] | None = None,
) -> Any:
    """An instance of dataclass ``cls`` from a (YAML) mapping: unknown keys refused (naming the closest
    known one), every value converted and checked by its field's annotation and bounds, nested dataclasses
    built recursively; ``prefix`` is the dotted path of this section in error messages. Every error is
    collected and reported at once in one ConfigError (:func:`combine`). ``prepare`` maps a section path
    to a function that rewrites its mapping first (e.g. a shorthand key)."""
    errors: list[ConfigError] = []
    obj = _build(cls, data, prefix, prepare, errors)
    if errors:
        raise combine(errors)
    return obj


def redacted(data: Any) -> Any:
    """Plain config data (:func:`to_dict`'s) with the credentials of every URL in it redacted (userinfo,
    credential-looking query values: ``medix_r1.llm.remote.redact_url``): what a config dump, a printed
    config or a log may show."""
    if isinstance(data, str):
        if "://" not in data:
            return data
        from medix_r1.llm.remote import redact_urls

        return redact_urls(data)
    if isinstance(data, dict):
        return {k: redacted(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redacted(v) for v in data]
    return data


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, str paths) of a config, for YAML and JSON."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


# -- dotted overrides ----------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A command-line value read as YAML (``true``, ``3``, ``[a, b]``, ``null``); text that is not YAML
    stays text. The field's annotation decides later what is acceptable."""
    import yaml

    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--a.b.c=value`` / ``a.b.c=value`` strings (values parsed as YAML) to a nested dict in place."""
    for item in overrides:
        body = item[2:] if item.startswith("--") else item
        if "=" not in body:
            raise ConfigError(f"override {short(item)} must look like --section.key=value", value=item)
        key, _, raw = body.partition("=")
        parts = [p for p in key.split(".") if p]
        if len(parts) < 2:
            raise ConfigError(
                f"override {short(item)}: name a section and a key, e.g. --train.max_steps=10",
                key=key,
                value=raw,
            )
        node = d
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {short(item)}: {where} is not a section", key=where, value=raw)
            node = nxt
        node[parts[-1]] = parse_value(raw)
    return d


def _keys_of(cls: type, prefix: str, out: list[str], depth: int = 0) -> None:
    hints = _hints(cls)
    for f in fields(cls):
        sub = _dataclass_in(hints.get(f.name))
        if sub is None and f.default_factory is not MISSING:
            try:
                val = f.default_factory()
            except Exception:
                val = None
            sub = type(val) if is_dataclass(val) else None
        if sub is not None and depth < 3:
            _keys_of(sub, f"{prefix}{f.name}.", out, depth + 1)
        else:
            out.append(prefix + f.name)


def option_keys(sections: Mapping[str, type]) -> list[str]:
    """Every dotted option (``train.max_steps``, ``reward.judge.model``, ...) of ``sections``."""
    out: list[str] = []
    for name, cls in sections.items():
        _keys_of(cls, f"{name}.", out)
    return out


def add_override_options(parser: Any, keys: list[str]) -> None:
    """Register ``--section.key`` for every key (hidden from --help; --print-config documents them). Prefix
    matching is turned off on ``parser``: ``--train.max_step=7`` is an error, not ``--train.max_steps``."""
    import argparse

    parser.allow_abbrev = False

    for key in keys:
        parser.add_argument(
            f"--{key}", dest=f"ov__{key}", default=None, metavar="VALUE", help=argparse.SUPPRESS
        )


def collect_overrides(args: Any) -> list[str]:
    """The ``--section.key=value`` strings given on the command line, in a parsed Namespace."""
    return [f"--{k[4:]}={v}" for k, v in vars(args).items() if k.startswith("ov__") and v is not None]


# -- --print-config ------------------------------------------------------------------------------------


def _yaml_scalar(v: Any) -> str:
    import yaml

    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _help(f: dataclasses.Field, tp: Any) -> str:
    text = f.metadata.get("help", "") if f.metadata else ""
    allowed = ""
    inner = [a for a in typing.get_args(tp) if a is not type(None)] if _is_union(tp) else [tp]
    lits = [a for a in inner if typing.get_origin(a) is Literal]
    if lits:
        allowed = " | ".join(str(x) for x in typing.get_args(lits[0]))
    bounds = f.metadata.get("bounds") if f.metadata else None
    if bounds:
        words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        allowed = (allowed + " " if allowed else "") + ", ".join(f"{words[k]} {b}" for k, b in bounds.items())
    if allowed:
        return f"[{allowed}] {text}".strip()
    return text


def _render(obj: Any, cls: type, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    hints = _hints(cls)
    for f in fields(cls):
        help_ = _help(f, hints.get(f.name, Any))
        value = getattr(obj, f.name) if obj is not None else None
        sub_cls = type(value) if is_dataclass(value) else None
        if sub_cls is not None:
            out.append(f"{pad}{f.name}:" + (f"  # {help_}" if help_ else ""))
            _render(value, sub_cls, indent + 1, out)
        else:
            line = f"{pad}{f.name}: {_yaml_scalar(redacted(to_dict(value)))}"
            out.append(line + (f"  # {help_}" if help_ else ""))


def render(obj: Any, title: str) -> str:
    """YAML of every option of config ``obj`` with its value and help (``--print-config``)."""
    out = [f"# {title}"]
    _render(obj, type(obj), 0, out)
    return "\n".join(out) + "\n"
