"""Greying what a rig's backend ignores, with the reason (drawing helpers, no logic beyond
reading the backend catalogue)."""

from __future__ import annotations

from bpy.types import UILayout

from ..contract import catalogue


def ignored_reason(ob, group: str) -> str | None:
    """Why the rig's backend ignores rig ``group`` (for a greyed panel), or None."""
    try:
        spec = catalogue.backend(ob.face_rig.backend)
    except Exception:  # an unknown backend id: the Model panel reports it
        return None
    if group in spec.groups:
        return None
    return f"{spec.label} ignores the {group} (no rig mapping)"


def draw_ignored(layout: UILayout, ob, group: str) -> None:
    reason = ignored_reason(ob, group)
    if reason:
        layout.label(text=reason, icon="INFO")
        layout.active = False
