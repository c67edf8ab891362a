"""Tooltips as one clean line: Blender shows an operator's or panel's docstring verbatim, so
a wrapped docstring shows its newlines and indents. ``one_line`` sets ``bl_description`` to
the docstring's words joined by single spaces before the class is registered."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T", bound=type)


def one_line(cls: T) -> T:
    """``cls`` with ``bl_description`` made one line (operators, panels, menus); other
    classes come back unchanged."""
    if not hasattr(cls, "bl_label"):
        return cls
    text = cls.__dict__.get("bl_description") or cls.__doc__ or ""
    if text:
        cls.bl_description = " ".join(text.split())
    return cls
