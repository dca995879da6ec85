"""How a custom accumulator's output (``ComponentData.extras[name]``) is shown.

A registry keyed by the extras name: the static page takes each renderer's
JavaScript, the notebook views its HTML function. Names are unique (a second
registration is refused unless it asks to replace the first), and the renderers
that ship with autointerp are registered in one place, `BUILTIN_RENDERERS`.
This module imports nothing of the report, so every view can use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from attrs import define


@define
class ExtrasRenderer:
    """How ``extras[name]`` is shown.

    ``js`` is the source of a script that calls
    ``AUTOINTERP.registerExtras(name, function (value, container, h) {...})``
    and builds DOM with ``h.el(tag, attrs, text)`` (text goes in as textContent).
    ``html`` renders the same value for notebooks; it must escape what it shows.
    Either may be None: the generic view (a bar chart for a list of numbers,
    indented JSON otherwise) is used in its place.
    """

    name: str
    js: str | None = None
    html: Callable[[Any], str] | None = None


#: renderers that ship with autointerp. None so far: the generic views in
#: report.js and notebook.py cover the built-in accumulators' extras.
BUILTIN_RENDERERS: tuple[ExtrasRenderer, ...] = ()


class ExtrasRegistry(Mapping[str, ExtrasRenderer]):
    """Extras renderers by name; a name is registered once unless replaced on purpose."""

    def __init__(self, renderers: tuple[ExtrasRenderer, ...] = ()):
        self._by_name: dict[str, ExtrasRenderer] = {}
        for r in renderers:
            self.register(r)

    def register(self, renderer: ExtrasRenderer, *, replace: bool = False) -> ExtrasRenderer:
        if renderer.name in self._by_name and not replace:
            raise ValueError(
                f"an extras renderer named {renderer.name!r} is already registered; pass replace=True to swap it"
            )
        self._by_name[renderer.name] = renderer
        return renderer

    def unregister(self, name: str) -> ExtrasRenderer | None:
        """Remove ``name`` (absent: nothing happens); returns what was registered."""
        return self._by_name.pop(name, None)

    def scripts(self, overrides: Mapping[str, str | ExtrasRenderer] | None = None) -> dict[str, str]:
        """``{name: js}`` for one report: the registered scripts, then ``overrides`` on top."""
        out = {n: r.js for n, r in self._by_name.items() if r.js}
        for name, r in (overrides or {}).items():
            js = r.js if isinstance(r, ExtrasRenderer) else r
            if js:
                out[name] = js
        return out

    def __getitem__(self, name: str) -> ExtrasRenderer:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"ExtrasRegistry({sorted(self._by_name)})"


#: the process-wide registry that `write_report` and the notebook views read
EXTRAS_RENDERERS = ExtrasRegistry(BUILTIN_RENDERERS)


def _read_js(js: str | os.PathLike | None) -> str | None:
    """JavaScript source as given, or read from a ``.js`` file named by a path."""
    if js is not None and not isinstance(js, str):
        return Path(js).read_text(encoding="utf-8")
    if isinstance(js, str) and js.endswith(".js") and "\n" not in js and Path(js).is_file():
        return Path(js).read_text(encoding="utf-8")
    return js


def register_extras_renderer(
    name: str,
    js: str | os.PathLike | None = None,
    html: Callable[[Any], str] | None = None,
    *,
    replace: bool = False,
) -> ExtrasRenderer:
    """Register how the report and notebooks show ``extras[name]``.

    ``js`` is JavaScript source, or a path to a ``.js`` file. Registering a name
    twice is refused unless ``replace=True``.

    >>> register_extras_renderer("activation_histogram", js='''
    ... AUTOINTERP.registerExtras("activation_histogram", function (value, box, h) {
    ...   box.appendChild(h.bars(value, {title: "activation histogram"}));
    ... });''')                                     # doctest: +SKIP
    """
    return EXTRAS_RENDERERS.register(ExtrasRenderer(name, _read_js(js), html), replace=replace)
