"""Register and unregister everything the extension adds to Blender, in a fixed order.

Registering does no work: no model load, no network, no GPU module. Unregistering removes
exactly what registering added, in reverse order, so disable/enable cycles leave no trace.
"""

from __future__ import annotations

import bpy
from bpy.props import StringProperty

from . import properties, rig_copies, rig_models  # props: rig property groups
from .controls_props import CLASSES as CONTROL_PROPERTY_CLASSES  # controls
from .controls_props import face_controls_property  # controls
from .dependencies import shutdown as stop_dependency_jobs  # deps
from .head_control import on_rig_changed, sync_sliders  # controls: head grab
from .live import register as register_live  # live: handlers, rig-change listener
from .live import unregister as unregister_live  # live: handlers off, worker stopped
from .operators import bake, presets, rig_groups, sefa_sliders  # props: rig operators
from .operators.add_head import NFR_OT_add_head
from .operators.add_rig import NFR_OT_add_rig  # live
from .operators.bake import NFR_OT_bake_face, NFR_OT_use_live_face  # live
from .operators.capture import CLASSES as CAPTURE_OPERATORS  # capture
from .operators.controls import CLASSES as CONTROL_OPERATORS  # controls
from .operators.dependencies import NFR_OT_check_dependencies, NFR_OT_install_dependencies  # deps
from .operators.photo import CLASSES as PHOTO_OPERATORS  # photo
from .operators.render import NFR_OT_render_portrait, NFR_OT_render_sequence  # live
from .panels import coefficients, model, output, sefa  # props: rig panels
from .panels.capture import CLASSES as CAPTURE_PANELS  # capture
from .panels.controls import CLASSES as CONTROL_PANELS  # controls
from .panels.face_rig import NFR_PT_face_rig
from .preferences import NFR_AddonPreferences, addon_preferences, restore_settings
from .tooltips import one_line  # controls: one-line tooltips

# Order matters: preferences before the operators that read them, panels last.
CLASSES = (
    NFR_AddonPreferences,
    *properties.CLASSES,  # props
    *CONTROL_PROPERTY_CLASSES,  # controls
    NFR_OT_add_head,
    NFR_OT_check_dependencies, NFR_OT_install_dependencies,  # deps
    NFR_OT_add_rig, NFR_OT_bake_face, NFR_OT_use_live_face,  # live
    NFR_OT_render_portrait, NFR_OT_render_sequence,  # live
    *rig_groups.CLASSES, *presets.CLASSES, *sefa_sliders.CLASSES,  # props
    *CONTROL_OPERATORS,  # controls
    *PHOTO_OPERATORS,  # photo
    *CAPTURE_OPERATORS,  # capture
    NFR_PT_face_rig,
    *CONTROL_PANELS,  # controls: before the raw panels (their parent)
    *model.CLASSES, *coefficients.CLASSES, *sefa.CLASSES, *output.CLASSES,  # props
    *CAPTURE_PANELS,  # capture: after Animation (its parent)
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
        (bpy.types.Object, "face_rig", properties.face_rig_property()),  # props
        (bpy.types.Object, "face_controls", face_controls_property()),  # controls
    )


# Handlers of the extension's own modules (the live bridge registers its own).
HANDLERS = (*rig_copies.HANDLERS, *bake.HANDLERS,
            (bpy.app.handlers.save_pre, rig_models.on_save_pre))


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(one_line(cls))  # controls: one-line tooltips
    for owner, name, prop in _properties():
        setattr(owner, name, prop)
    restore_settings(addon_preferences(bpy.context))  # Blender forgot them on disable
    for handlers, handler in HANDLERS:
        handlers.append(handler)
    bpy.app.handlers.depsgraph_update_post.append(sync_sliders)  # controls
    properties.RIG_CHANGE_LISTENERS.append(on_rig_changed)  # controls
    register_live()  # live: last


def unregister() -> None:
    unregister_live()  # live: first
    if on_rig_changed in properties.RIG_CHANGE_LISTENERS:  # controls
        properties.RIG_CHANGE_LISTENERS.remove(on_rig_changed)
    if sync_sliders in bpy.app.handlers.depsgraph_update_post:  # controls
        bpy.app.handlers.depsgraph_update_post.remove(sync_sliders)
    for handlers, handler in reversed(HANDLERS):
        if handler in handlers:
            handlers.remove(handler)
    rig_models.shutdown()
    stop_dependency_jobs()  # deps: no pip or probe process outlives the extension
    for owner, name, _prop in reversed(_properties()):
        delattr(owner, name)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
