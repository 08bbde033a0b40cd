"""Options of a long-running command in layers: defaults < config file < environment < flags.

``l2pop server`` and ``l2pop agent`` take every option from four places. ``layered(parser)``
turns an argparse parser into one whose options can also come from a TOML file
(``--config FILE`` or ``L2POP_CONFIG``) and from the environment; ``resolve(args)`` then fills
in what the command line left out. The list of options is the parser's own actions, so the
file's keys, the environment's names and the flags cannot drift apart:

- the key of an option is its long flag without the dashes (``--max-connections`` ->
  ``max-connections``); its environment variable is ``L2POP_`` and the key upper-cased with
  ``_`` for ``-`` (``L2POP_MAX_CONNECTIONS``), unless ``layered`` is told another name;
- a value from the file or the environment goes through the option's ``type=`` and
  ``choices`` exactly as a flag's string does (a TOML number is converted from its text, so
  ``5`` for a float option is ``5.0`` and ``5.5`` for an integer one is refused);
- options that go together (a token and its file) are one *group*: the highest layer that
  sets any of them supplies all of them, so ``--token`` beats a ``token-file`` in the file.

How it works: ``layered`` gives every option's action a subclass that also records, on the
namespace, that the flag was given; it drops ``required=`` (a required option may come from
the file) and checks it after layering instead. Defaults stay argparse's, so a namespace
parsed without ``resolve`` is what it always was. Options a parent parser also defines (the
global ``--server``, ``--tls-ca``) are *inherited*: given before the subcommand, they are
told from the parent's default by identity (the default object itself, ``is``: argparse
hands an untyped string default through unchanged).

Every failure is a ``ConfigError`` whose message is one line naming the file and the key, or
the variable, or the flag; the commands print it as ``error: ...`` and exit 2 before anything
listens.
"""

from __future__ import annotations

import argparse
import difflib
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from l2pop.logfmt import LOG_FORMATS, LOG_LEVELS

ENV_PREFIX = "L2POP_"
ENV_CONFIG = "L2POP_CONFIG"
#: the namespace attribute that carries a parser's ``Layers`` to its handler
LAYERS_DEST = "_config_layers"
#: the namespace attribute holding the dests given on the command line (a set)
GIVEN_DEST = "_config_given"
#: stands for "no inherited default": never the value of anything
_NOTHING: Any = object()


class ConfigError(Exception):
    """An option that cannot be had as configured; the message is one line."""


@dataclass(frozen=True)
class IntRange:
    """Bounds of an integer option (``hi`` None: no upper bound), checked on every layer."""

    lo: int
    hi: int | None = None

    def describe(self) -> str:
        return f"{self.lo} to {self.hi}" if self.hi is not None else f"at least {self.lo}"

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int | float):
            return False
        return value >= self.lo and (self.hi is None or value <= self.hi)


@dataclass(frozen=True)
class Option:
    """One option of a layered parser, as the file, the environment and the docs see it."""

    key: str
    dest: str
    flag: str
    env: str
    default: Any
    required: bool
    type: Callable[[str], Any] | None
    choices: tuple[Any, ...] | None
    is_switch: bool
    help: str
    bounds: IntRange | None = None
    #: defined by a parent parser too: this object on the namespace means "not given"
    inherited_default: Any = _NOTHING


@dataclass(frozen=True)
class Layers:
    """The layered options of one parser, by key; ``resolve`` applies them to a namespace."""

    options: dict[str, Option]
    groups: tuple[tuple[str, ...], ...] = ()


def option_key(action: argparse.Action) -> str:
    """The config-file key of an option: its first long flag without the dashes."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    return longs[0][2:]


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace("-", "_")


def layered(
    parser: argparse.ArgumentParser,
    *,
    env: Mapping[str, str] | None = None,
    groups: Iterable[Sequence[str]] = (),
    bounds: Mapping[str, IntRange] | None = None,
    inherited: Mapping[str, Any] | None = None,
) -> Layers:
    """Make ``parser``'s options layered and add ``--config FILE``; call it once every option
    is defined. Keyword maps are by key (``"token"``), ``inherited`` by dest.

    ``env``: variable names other than ``L2POP_<KEY>``. ``groups``: keys taken together from
    one layer. ``bounds``: integer ranges checked on every layer. ``inherited``: dests a parent
    parser defines, with the default object that parent gives them. Options hidden from the
    help (``help=SUPPRESS``: internal) are left alone.
    """
    env, bounds, inherited = env or {}, bounds or {}, inherited or {}
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help=f"read options from this TOML file (env {ENV_CONFIG}); keys are the long "
        "options without dashes; the environment and the command line override it",
    )
    options: dict[str, Option] = {}
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if action.dest in ("help", "config"):
            continue
        options[option_key(action)] = _option(action, env, bounds, inherited)
    for name in [*env, *bounds, *(k for g in groups for k in g)]:
        if name not in options:  # a typo in the caller: fail when the parser is built
            raise KeyError(f"layered(): no option {name!r}")
    layers = Layers(options, tuple(tuple(g) for g in groups))
    parser.set_defaults(**{LAYERS_DEST: layers})
    return layers


def _option(
    action: argparse.Action,
    env: Mapping[str, str],
    bounds: Mapping[str, IntRange],
    inherited: Mapping[str, Any],
) -> Option:
    key = option_key(action)
    is_switch = isinstance(action, argparse._StoreTrueAction)
    if not is_switch and type(action) is not argparse._StoreAction:
        raise TypeError(f"layered(): --{key} is a {type(action).__name__}, not supported")
    option = Option(
        key=key,
        dest=action.dest,
        flag=f"--{key}",
        env=env.get(key, env_name(key)),
        default=inherited.get(action.dest, action.default),
        required=action.required,
        type=action.type if callable(action.type) else None,
        choices=tuple(action.choices) if action.choices is not None else None,
        is_switch=is_switch,
        help=action.help or "",
        bounds=bounds.get(key),
        inherited_default=inherited.get(action.dest, _NOTHING),
    )
    action.__class__ = _recording(type(action))
    action.required = False
    if option.env not in option.help:  # --help names every variable, as the docs do
        action.help = f"{option.help} [env {option.env}]"
    return option


_RECORDING: dict[type[argparse.Action], type[argparse.Action]] = {}


def _recording(base: type[argparse.Action]) -> type[argparse.Action]:
    """``base`` that also adds its dest to the namespace's ``GIVEN_DEST`` set when called
    (argparse calls an action only for a flag on the command line)."""
    if base not in _RECORDING:

        def __call__(  # noqa: N807 (the method argparse calls)
            self: argparse.Action,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            base.__call__(self, parser, namespace, values, option_string)
            given: set[str] = getattr(namespace, GIVEN_DEST, None) or set()
            given.add(self.dest)
            setattr(namespace, GIVEN_DEST, given)

        _RECORDING[base] = type(f"Recording{base.__name__}", (base,), {"__call__": __call__})
    return _RECORDING[base]


# -- options both services share ------------------------------------------------------------


def add_log_options(p: argparse.ArgumentParser, *, default_level: str = "INFO") -> None:
    """``--log-level`` and ``--log-format``, the same on the server and the agents."""
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default_level,
        metavar="LEVEL",
        help=f"least severe level logged: {', '.join(LOG_LEVELS)}, in any case "
        f"(env L2POP_LOG_LEVEL; default {default_level})",
    )
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text: one readable line per event; json: one JSON object per line with time, "
        "level, logger, message and host/network/port/revision where they apply (env "
        "L2POP_LOG_FORMAT; default text)",
    )


# -- reading values --------------------------------------------------------------------------


def _expected(option: Option) -> str:
    if option.is_switch:
        return "true or false"
    if option.choices is not None:
        return "one of " + ", ".join(str(c) for c in option.choices)
    if option.bounds is not None:
        lo, hi = option.bounds.lo, option.bounds.hi
        return f"an integer from {lo} to {hi}" if hi is not None else f"an integer of at least {lo}"
    if option.type is int:
        return "an integer"
    if option.type is float:
        return "a number"
    return "a string"


def _show(value: object) -> str:
    """A value as the error line shows it: strings quoted (as TOML would), the rest as is."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def convert(option: Option, value: object, where: str) -> Any:
    """``value`` (a TOML value, or an environment string) as the option's flag would have it.

    :raises ConfigError: ``<where>: expected ..., got ...``
    """
    bad = ConfigError(f"{where}: expected {_expected(option)}, got {_show(value)}")
    if option.is_switch:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _SWITCH_WORDS:
            return _SWITCH_WORDS[value.lower()]
        raise bad
    # numbers from TOML go through type= as text, like a flag's (5.5 is no integer)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise bad
    text = value if isinstance(value, str) else str(value)
    if option.type is None and not isinstance(value, str):
        raise bad
    try:
        result = option.type(text) if option.type is not None else text
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise bad from None
    check(option, result, bad)
    return result


_SWITCH_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def check(option: Option, value: Any, error: ConfigError) -> None:
    """The checks a value from any layer must pass: ``choices`` and ``bounds``."""
    if option.choices is not None and value not in option.choices:
        raise error
    if option.bounds is not None and value not in option.bounds:
        raise error


def load_file(path: str) -> dict[str, Any]:
    """The TOML table in ``path``.

    :raises ConfigError: ``<path>: <why>`` for a file that cannot be read or parsed
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def file_values(layers: Layers, path: str) -> dict[str, Any]:
    """The file's values by dest, each converted and checked; unknown keys are errors."""
    values: dict[str, Any] = {}
    for key, raw in load_file(path).items():
        option = layers.options.get(key)
        if option is None:
            close = difflib.get_close_matches(key, list(layers.options), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{path}: {key}: unknown option{hint}")
        values[option.dest] = convert(option, raw, f"{path}: {key}")
    return values


def env_values(layers: Layers, environ: Mapping[str, str]) -> dict[str, Any]:
    """The environment's values by dest (an empty variable counts as unset, as before)."""
    values: dict[str, Any] = {}
    for option in layers.options.values():
        raw = environ.get(option.env)
        if raw:
            values[option.dest] = convert(option, raw, option.env)
    return values


def flag_values(layers: Layers, args: argparse.Namespace) -> dict[str, Any]:
    """What the command line gave, by dest, checked like the other layers."""
    given: set[str] = getattr(args, GIVEN_DEST, None) or set()
    values: dict[str, Any] = {}
    for option in layers.options.values():
        value = getattr(args, option.dest, None)
        inherited = option.inherited_default is not _NOTHING
        if option.dest not in given and not (inherited and value is not option.inherited_default):
            continue
        if option.bounds is not None and value not in option.bounds:
            raise ConfigError(f"{option.flag} must be {option.bounds.describe()}, got {value}")
        values[option.dest] = value
    return values


# -- layering ---------------------------------------------------------------------------------


def merge(
    layers: Layers,
    flags: Mapping[str, Any],
    env: Mapping[str, Any],
    file: Mapping[str, Any],
    *,
    path: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every dest's value: flags, else environment, else file, else ``defaults`` (what the
    parsed namespace holds: argparse's defaults, converted) or the option's default; a group
    whole from the highest layer that sets any of its members.

    :raises ConfigError: for a group set twice within one layer, or a required option that
        no layer sets
    """
    grouped = {layers.options[k].dest for g in layers.groups for k in g}
    stack = (flags, env, file)
    defaults = defaults or {}
    result: dict[str, Any] = {}
    for option in layers.options.values():
        if option.dest not in grouped:
            bottom = defaults.get(option.dest, option.default)
            result[option.dest] = next(
                (layer[option.dest] for layer in stack if option.dest in layer), bottom
            )
    for group in layers.groups:
        members = [layers.options[k] for k in group]
        chosen: Mapping[str, Any] = {}
        for index, layer in enumerate(stack):
            given = [m for m in members if m.dest in layer]
            if len(given) > 1:
                raise ConfigError(_conflict(given, index, path))
            if given:
                chosen = layer
                break
        for m in members:
            result[m.dest] = chosen.get(m.dest, m.default)
    for option in layers.options.values():
        if option.required and result[option.dest] is None:
            raise ConfigError(
                f"{option.flag} is required (or {option.env}, or {option.key} in the config file)"
            )
    return result


def _conflict(given: Sequence[Option], layer: int, path: str | None) -> str:
    """The one line for a group set twice in one layer (0 flags, 1 environment, 2 file);
    the first two as ``l2pop.tokenfile`` words them."""
    if layer == 0:
        return f"{' and '.join(o.flag for o in given)} are mutually exclusive: give one"
    if layer == 1:
        return f"{' and '.join(o.env for o in given)} are both set: set one"
    return f"{path}: {' and '.join(o.key for o in given)} are mutually exclusive: give one"


def config_path(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    return getattr(args, "config", None) or environ.get(ENV_CONFIG) or None


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Layers:
    """Fill ``args`` (parsed by a ``layered`` parser) from every layer, in place; returns the
    parser's ``Layers``.

    :raises ConfigError: one line naming the file and key, the variable or the flag
    """
    environ = os.environ if environ is None else environ
    layers: Layers = getattr(args, LAYERS_DEST)
    path = config_path(args, environ)
    file = file_values(layers, path) if path else {}
    values = merge(
        layers,
        flag_values(layers, args),
        env_values(layers, environ),
        file,
        path=path,
        defaults=vars(args),
    )
    for dest, value in values.items():
        setattr(args, dest, value)
    return layers
