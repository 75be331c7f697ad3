"""Class tables: label value -> (name, colour), one type for models, readers, writers and napari layers.

`ClassTable` is an immutable, sorted list of `ClassInfo` (the model card's entry: ``value``, ``name``,
``color`` RGBA in 0..1 or ``None``). Value 0 is background and never stored. It is built from whatever form a
class table arrives in (`ClassTable.from_any`): ``{value: name}``, ``{value: (name, colour)}``,
``{value: {"name", "color"}}`` (our NIfTI extension / ``classes.json``), ``[{"value", "name", "color"}]``,
a list of `ClassInfo` or a `ModelCard`.

In a `Volume`'s metadata a class table is ``meta["classes"]`` ({value: name}) plus ``meta["class_colors"]``
({value: rgba}); `ClassTable.from_meta` also reads the older ``meta["colors"]`` key (written by the pipeline
before), and `ClassTable.to_meta` writes both colour keys so older readers keep working.

``ABDOMEN_CLASSES`` is the table shared by the sample phantom, the default model and the widgets; its colours
fill in for classes of the same value and name that have none (`ClassTable.with_default_colors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

RGBA = tuple[float, float, float, float]

#: label value -> (name, RGBA colour in 0..1)
ABDOMEN_CLASSES: dict[int, tuple[str, RGBA]] = {
    1: ("liver", (0.86, 0.47, 0.35, 1.0)),
    2: ("spleen", (0.62, 0.31, 0.71, 1.0)),
    3: ("kidney_right", (0.98, 0.82, 0.24, 1.0)),
    4: ("kidney_left", (0.95, 0.65, 0.15, 1.0)),
    5: ("liver_tumour", (0.90, 0.10, 0.10, 1.0)),
    6: ("spine", (0.25, 0.60, 1.0, 1.0)),  # blue: visible on bone (off-white was not)
}

#: metadata keys of a class table in `Volume.meta` / layer metadata
NAMES_KEY = "classes"
COLORS_KEY = "class_colors"
OLD_COLORS_KEY = "colors"  # what the pipeline wrote before; read, and still written for older readers


def meta_colors(meta: dict | None) -> dict:
    """``{value: rgba}`` stored in ``meta`` under ``class_colors``, else under the older ``colors`` key."""
    meta = meta or {}
    return dict(meta.get(COLORS_KEY) or meta.get(OLD_COLORS_KEY) or {})


@dataclass
class ClassInfo:
    value: int
    name: str
    color: tuple[float, float, float, float] | None = None  # RGBA in 0..1


def rgba(color) -> RGBA | None:
    """``color`` (RGB or RGBA, 0..1) as a float RGBA tuple; ``None`` for ``None`` or anything malformed."""
    if color is None:
        return None
    try:
        values = tuple(float(c) for c in color)
    except (TypeError, ValueError):
        return None
    if len(values) == 3:
        values = (*values, 1.0)
    return values if len(values) == 4 else None  # type: ignore[return-value]


def _entry(value, entry, colors) -> ClassInfo:
    value = int(value)
    color = None
    if isinstance(entry, ClassInfo):
        name, color = entry.name, entry.color
    elif isinstance(entry, dict):
        name, color = entry.get("name", value), entry.get("color")
    elif isinstance(entry, (tuple, list)) and len(entry) == 2 and not isinstance(entry[1], (int, float, str)):
        name, color = entry
    else:
        name = entry
    if colors and value in colors:
        color = colors[value] if colors[value] is not None else color
    return ClassInfo(value, str(name), rgba(color))


@dataclass(frozen=True)
class ClassTable:
    """Foreground classes sorted by value (see the module docstring)."""

    classes: tuple[ClassInfo, ...] = field(default_factory=tuple)

    def __post_init__(self):
        by_value = {}
        for c in self.classes:
            if int(c.value) != 0:
                by_value[int(c.value)] = ClassInfo(int(c.value), str(c.name), rgba(c.color))
        object.__setattr__(self, "classes", tuple(by_value[v] for v in sorted(by_value)))

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_any(cls, classes=None, colors: dict | None = None) -> "ClassTable":
        """From any class-table form (module docstring); ``colors`` ({value: rgba}) override the entries'."""
        if isinstance(classes, ClassTable):
            table = classes
        elif classes is None:
            table = cls()
        elif hasattr(classes, "classes") and not isinstance(classes, dict):  # a ModelCard
            table = cls(tuple(classes.classes))
        elif isinstance(classes, dict):
            table = cls(tuple(_entry(v, e, None) for v, e in classes.items()))
        else:
            items = []
            for item in classes:
                if isinstance(item, ClassInfo):
                    items.append(item)
                else:
                    items.append(_entry(item["value"], item, None))
            table = cls(tuple(items))
        return table.with_colors(colors) if colors else table

    @classmethod
    def from_meta(cls, meta: dict | None) -> "ClassTable":
        """From ``meta["classes"]`` and ``meta["class_colors"]`` (or the older ``meta["colors"]``)."""
        return cls.from_any((meta or {}).get(NAMES_KEY) or {}).fill_colors(meta_colors(meta))

    @classmethod
    def from_json(cls, doc) -> "ClassTable":
        """From the JSON form (``{"1": {"name": .., "color": ..}}``, ``{"1": "liver"}`` or a list of entries);
        `ValueError` when it is not a class table."""
        if isinstance(doc, dict):
            return cls(tuple(_entry(int(k), e, None) for k, e in doc.items()))
        if isinstance(doc, list):
            return cls(tuple(_entry(int(item["value"]), item, None) for item in doc))
        raise ValueError(f"a class table must be an object or a list, got {type(doc).__name__}")

    # ---------------------------------------------------------------- views
    def __iter__(self) -> Iterator[ClassInfo]:
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __bool__(self) -> bool:
        return bool(self.classes)

    def __contains__(self, value) -> bool:
        return any(c.value == int(value) for c in self.classes)

    def get(self, value) -> ClassInfo | None:
        return next((c for c in self.classes if c.value == int(value)), None)

    def names(self, background: bool = False) -> dict[int, str]:
        """``{value: name}``; with ``background=True`` it starts with ``{0: "background"}``."""
        out = {0: "background"} if background else {}
        out.update({c.value: c.name for c in self.classes})
        return out

    def colors(self) -> dict[int, RGBA]:
        """``{value: rgba}`` of the classes that have a colour."""
        return {c.value: c.color for c in self.classes if c.color is not None}

    def pairs(self) -> dict[int, tuple[str, RGBA | None]]:
        """``{value: (name, rgba or None)}`` (the form the writers take)."""
        return {c.value: (c.name, c.color) for c in self.classes}

    def by_channel(self) -> dict[int, str]:
        """Network output channel -> class name: channel ``n`` (from 1) is the ``n``-th class by value."""
        return {n: c.name for n, c in enumerate(self.classes, start=1)}

    def to_json(self) -> dict[str, Any]:
        """``{"<value>": {"name": .., "color": [r, g, b, a] or None}}`` (our NIfTI extension, ``classes.json``)."""
        return {str(c.value): {"name": c.name, "color": list(c.color) if c.color else None} for c in self.classes}

    def to_meta(self, meta: dict) -> dict:
        """Store this table in ``meta`` (``classes``, ``class_colors`` and the older ``colors``); returns it."""
        meta[NAMES_KEY] = self.names()
        colors = self.colors()
        if colors:
            meta[COLORS_KEY] = dict(colors)
            meta[OLD_COLORS_KEY] = dict(colors)
        else:
            meta.pop(COLORS_KEY, None)
            meta.pop(OLD_COLORS_KEY, None)
        return meta

    # ---------------------------------------------------------------- changes
    def with_colors(self, colors: dict | None) -> "ClassTable":
        """A copy where ``colors`` ({value: rgba}) replace the colours of those values."""
        colors = {int(k): rgba(v) for k, v in (colors or {}).items()}
        return ClassTable(tuple(ClassInfo(c.value, c.name, colors.get(c.value) or c.color) for c in self.classes))

    def fill_colors(self, colors: dict | None) -> "ClassTable":
        """A copy where classes without a colour take ``colors``' ({value: rgba}) colour of their value."""
        colors = {int(k): rgba(v) for k, v in (colors or {}).items()}
        return ClassTable(tuple(ClassInfo(c.value, c.name, c.color or colors.get(c.value)) for c in self.classes))

    def with_default_colors(self, defaults: dict[int, tuple[str, RGBA]] | None = None) -> "ClassTable":
        """A copy where classes without a colour take the default table's (``ABDOMEN_CLASSES``) colour of the
        same value when the names agree."""
        defaults = ABDOMEN_CLASSES if defaults is None else defaults
        out = []
        for c in self.classes:
            color = c.color
            if color is None and c.value in defaults and defaults[c.value][0] == c.name:
                color = defaults[c.value][1]
            out.append(ClassInfo(c.value, c.name, color))
        return ClassTable(tuple(out))

    def infos(self) -> list[ClassInfo]:
        """Copies of the entries (for a `ModelCard`)."""
        return [ClassInfo(c.value, c.name, c.color) for c in self.classes]


ABDOMEN_TABLE = ClassTable(tuple(ClassInfo(v, n, c) for v, (n, c) in ABDOMEN_CLASSES.items()))


def _table(table) -> ClassTable:
    if table is ABDOMEN_CLASSES:
        return ABDOMEN_TABLE
    if isinstance(table, ClassTable):
        return table
    return ClassTable.from_any(table)


def class_names(table=ABDOMEN_CLASSES) -> dict[int, str]:
    """``{value: name}`` with ``0: "background"`` (label values are the keys; see `ClassTable.names`)."""
    return _table(table).names(background=True)


def class_colors(table=ABDOMEN_CLASSES) -> dict[int, RGBA]:
    """``{value: rgba}`` of the classes with a colour."""
    return _table(table).colors()
