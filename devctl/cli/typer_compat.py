"""Two adjustments to Typer, made in one place, each a no-op where Typer lacks the hook.

1. Typer (0.29) converts every parameter value through a pydantic ``TypeAdapter``,
   built on first use even when the value is ``None`` or a plain string: any command
   with an option then pays for importing pydantic (~60 ms) and building adapters,
   which is most of a read command's time. Parameters here get a deferred converter:
   ``None`` and unconstrained ``str`` / digit-only ``int`` values are handled directly,
   anything else (enums, paths, ranges, lists, bad input and its error message) goes
   to Typer's own converter, built then.
2. The help shows the type after every option, so boolean flags read ``--json <bool>``
   as if they took a value; flags get no type column.
3. ``typer.rich_utils`` (help and error panels) imports ``rich.markdown`` (markdown-it,
   pygments) and ``rich.traceback`` at its top, ~45 ms, for Markdown help text (we use
   Rich markup) and pretty tracebacks (disabled): they are imported when first used.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from typing import Any

_DIGITS = re.compile(r"[+-]?[0-9]+")


class _DeferredRuntimeParam:
    """Typer's runtime converter for one parameter, built only when a value needs it."""

    def __init__(self, parameter: Any) -> None:
        self._parameter = parameter
        self._real: Any = None

    def _typer(self) -> Any:
        if self._real is None:
            from typer._coercion import build_runtime_param

            self._real = build_runtime_param(self._parameter.type_descriptor)
        return self._real

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None
        if not multi and isinstance(value, str):
            info = self._parameter.type_descriptor.parameter_info
            plain = info.parser is None and getattr(info, "click_type", None) is None
            annotation = self._parameter.type_descriptor.annotation
            if plain and annotation is str:
                return value
            if (
                plain
                and annotation is int
                and info.min is None
                and info.max is None
                and _DIGITS.fullmatch(value)
            ):
                return int(value)
        return self._typer().coerce(value, param=param, ctx=ctx)

    def __getattr__(self, name: str) -> Any:
        # Anything else Typer asks of its converter comes from the real one.
        return getattr(self._typer(), name)


def _get_runtime_param(self: Any) -> Any:
    if self._runtime_param is None:
        self._runtime_param = _DeferredRuntimeParam(self)
    return self._runtime_param


def _display_type_rich(original: Any) -> Any:
    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        result: str | None = original(self, ctx)
        return result

    return display_type_rich


def _deferred_class(module: str, name: str) -> type:
    """A stand-in for ``module.name`` that imports the real class when first used."""

    def real() -> Any:
        return getattr(importlib.import_module(module), name)

    class Meta(type):
        def __getattr__(cls, attr: str) -> Any:  # class attributes, e.g. from_exception
            return getattr(real(), attr)

    class Deferred(metaclass=Meta):
        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            return real()(*args, **kwargs)

    Deferred.__name__ = Deferred.__qualname__ = name
    return Deferred


def import_rich_utils() -> None:
    """Import typer.rich_utils with the stand-ins; call before help or an error panel."""
    if "typer.rich_utils" in sys.modules:
        return
    stubs = {}
    for module, name in (("rich.markdown", "Markdown"), ("rich.traceback", "Traceback")):
        if module not in sys.modules:
            stub = types.ModuleType(module)
            setattr(stub, name, _deferred_class(module, name))
            stubs[module] = stub
    sys.modules.update(stubs)
    try:
        importlib.import_module("typer.rich_utils")
    except ImportError:  # a Typer without rich_utils: nothing to defer
        pass
    finally:
        # Only typer.rich_utils holds the stand-ins; anyone else gets the real modules.
        for module, stub in stubs.items():
            if sys.modules.get(module) is stub:
                del sys.modules[module]


def install() -> None:
    """Apply the first two adjustments; called once, before the app is built."""
    try:
        from typer import core
    except ImportError:  # pragma: no cover - Typer always ships core
        return
    parameter: Any = getattr(core, "_TyperParameter", None)
    if getattr(parameter, "get_runtime_param", _get_runtime_param) is not _get_runtime_param:
        parameter.get_runtime_param = _get_runtime_param
    option = getattr(core, "TyperOption", None)
    original = getattr(option, "display_type_rich", None)
    if option is not None and original is not None and not getattr(original, "_devctl", False):
        patched = _display_type_rich(original)
        patched._devctl = True
        option.display_type_rich = patched
