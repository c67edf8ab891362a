"""What the panels draw only when another part of the extension registers it."""

from __future__ import annotations

import bpy


def operator_available(idname: str) -> bool:
    """True when the operator ``idname`` ("nfr.render_portrait") is registered."""
    group, _, name = idname.partition(".")
    return hasattr(bpy.types, f"{group.upper()}_OT_{name}")
