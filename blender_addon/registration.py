"""Register and unregister everything the extension adds to Blender, in a fixed order.

Registering does no work: no model load, no network, no GPU module. Unregistering removes
exactly what registering added, in reverse order, so disable/enable cycles leave no trace.
"""

from __future__ import annotations

import bpy
from bpy.props import StringProperty

from .operators.add_head import NFR_OT_add_head
from .panels.face_rig import NFR_PT_face_rig
from .preferences import NFR_AddonPreferences

# Order matters: preferences before the operators that read them, panels last.
CLASSES = (
    NFR_AddonPreferences,
    NFR_OT_add_head,
    NFR_PT_face_rig,
)


def _properties() -> tuple[tuple[type, str, object], ...]:
    """``(owner type, attribute name, property)`` attached to Blender's types."""
    return (
        (
            bpy.types.Object,
            "face_rig_source",
            StringProperty(
                name="Face Rig Source",
                description="Face-model file this head mesh was built from (empty: not a head)",
                subtype="FILE_PATH",
                options=set(),
            ),
        ),
    )


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    for owner, name, prop in _properties():
        setattr(owner, name, prop)


def unregister() -> None:
    for owner, name, _prop in reversed(_properties()):
        delattr(owner, name)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
