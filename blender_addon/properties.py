"""The face rig's data on objects: ``Object.face_rig`` (NFR_FaceRig), saved in the .blend.

Every rig coefficient is its own animatable float so artists keyframe it in the Dope Sheet and
Graph Editor; Blender caps vector properties at 32 values, and one float per coefficient
gives stable data paths (``face_rig.expression.c012``) and readable channel names. The group
classes (NFR_RigIdentity, ...) are generated from rig.params.GROUPS: names, units and soft
ranges come from there, so the schema has a single source.

Every property that changes the rendered face calls each of RIG_CHANGE_LISTENERS with the
owner object. Update callbacks do not fire when animation changes a value: frame changes are
the live bridge's job (frame_change_post).
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)
from bpy.types import Context, Object, PropertyGroup

from .contract import catalogue
from .rig.params import GROUPS, SOFT_RANGES

RIG_CHANGE_LISTENERS: list[Callable[[Object], None]] = []
"""Called with the owner object after any rig property changed through Blender's data API
(UI, Python, operators); the live bridge appends its listener in register()."""

GROUP_LABELS: dict[str, str] = {
    "identity": "Identity",
    "expression": "Expression",
    "reflectance": "Reflectance",
    "rotation": "Rotation",
    "illumination": "Illumination",
    "translation": "Translation",
}
_ROTATION_NAMES = ("Pitch", "Yaw", "Roll")
_AXES = ("X", "Y", "Z")
_SH_CHANNELS = ("R", "G", "B")

# Values the properties accept at all (Blender clamps silently beyond them, so writers check
# first). The statistical groups stop at ±5 σ like the head mesh's shape-key sliders: beyond
# that the face model extrapolates into broken faces. Symmetric: |value| <= limit.
HARD_LIMITS: dict[str, tuple[float, ...]] = {
    "identity": (5.0,) * 80,
    "expression": (5.0,) * 64,
    "reflectance": (5.0,) * 80,
    "rotation": (math.pi,) * 3,
    "illumination": (3.0,) * 27,
    "translation": (2.0, 2.0, 8.0),
}

RESOLUTION_ITEMS = (
    ("FULL", "Full", "The model's own resolution"),
    ("1024", "1024 px", "Stop at the 1024 px block"),
    ("512", "512 px", "Stop at the 512 px block"),
    ("256", "256 px", "Stop at the 256 px block"),
    ("128", "128 px", "Stop at the 128 px block"),
    ("64", "64 px", "Stop at the 64 px block"),
    ("32", "32 px", "Stop at the 32 px block"),
)
"""Every resolution a rig can ask for; the menus offer the ones its model has
(``resolution_items``). Each keeps its position as its stored number, so files saved when the
menu was a fixed list read the same."""

BACKEND_ITEMS = catalogue.backend_items()


def coefficient_key(index: int) -> str:
    """Property name of coefficient ``index`` in a group: ``c000``, ``c001``, ..."""
    return f"c{index:03d}"


def coefficient_label(group: str, index: int) -> str:
    """Human name of one coefficient, e.g. "Identity 12", "Yaw", "SH G 3", "Translation Z"."""
    if group == "rotation":
        return _ROTATION_NAMES[index]
    if group == "illumination":
        return f"SH {_SH_CHANNELS[index // 9]} {index % 9}"
    if group == "translation":
        return f"Translation {_AXES[index]}"
    return f"{GROUP_LABELS[group]} {index}"


def _coefficient_description(group: str, index: int) -> str:
    soft = float(SOFT_RANGES[group][index])
    if group == "rotation":
        axis = _AXES[index].lower()
        return (
            f"Head rotation about {axis} (R = Rz·Ry·Rx); plausible within "
            f"±{math.degrees(soft):.0f}°"
        )
    if group == "illumination":
        channel = ("red", "green", "blue")[index // 9]
        return (
            f"Spherical-harmonics light coefficient {index % 9} of the {channel} channel "
            f"(ambient 0.8 is built in); plausible within ±{soft:g}"
        )
    if group == "translation":
        return f"Head offset along {_AXES[index]} in decimetres; plausible within ±{soft:g} dm"
    return (
        f"{GROUP_LABELS[group]} coefficient {index} of the face model, in standard deviations; "
        f"plausible within ±{soft:g}"
    )


def resolution_pixels(identifier: str, full: int = 0) -> int | None:
    """Block resolution of a RESOLUTION_ITEMS identifier (None: the model's full size).

    ``full`` is the model's own size when known (0: unknown); a block above it, or an
    identifier the menu no longer offers (Blender reads those as ""), means the full size."""
    if identifier in ("FULL", ""):
        return None
    pixels = int(identifier)
    return None if full and pixels >= full else pixels


_RESOLUTION_MENUS: dict[int, list[tuple[str, str, str, int]]] = {}


def resolution_items(self: PropertyGroup | None, _context: Context | None) -> list:
    """The resolution menu of one rig: Full and the blocks up to its model's size
    (``model_resolution``; every block when unknown). Cached per size: Blender keeps pointers
    into the returned strings, so they must stay alive."""
    full = int(getattr(self, "model_resolution", 0) or 0)
    items = _RESOLUTION_MENUS.get(full)
    if items is None:
        items = [
            (identifier, label, description, number)
            for number, (identifier, label, description) in enumerate(RESOLUTION_ITEMS)
            if identifier == "FULL" or not full or int(identifier) <= full
        ]
        if full:
            items[0] = ("FULL", f"Full ({full} px)", "The model's own resolution", 0)
        _RESOLUTION_MENUS[full] = items
    return items


def set_model_resolution(face_rig: PropertyGroup, full: int) -> None:
    """Record the rig's model size (0: unknown) and set its resolution menus to Full where they
    ask for more than that, so they never hold an entry the menu does not offer. The menus are
    read before the size changes: reading an entry the menu lacks makes Blender warn."""
    names = ("preview_resolution", "render_resolution")
    values = {name: getattr(face_rig, name) for name in names}
    face_rig.model_resolution = full
    for name, value in values.items():
        if value == "" or (full and value != "FULL" and int(value) > full):
            setattr(face_rig, name, "FULL")


def _resolution_number(identifier: str) -> int:
    return [item[0] for item in RESOLUTION_ITEMS].index(identifier)


# -- change notification ------------------------------------------------------------------------

_deferred: list[Object] | None = None


def notify_rig_changed(owner: Object) -> None:
    """Call every listener with ``owner``; one failing listener does not stop the others or
    the edit that triggered it (its traceback goes to the console)."""
    if _deferred is not None:
        if all(owner != seen for seen in _deferred):
            _deferred.append(owner)
        return
    for listener in tuple(RIG_CHANGE_LISTENERS):
        try:
            listener(owner)
        except Exception:
            traceback.print_exc()


@contextmanager
def deferred_rig_changes() -> Iterator[None]:
    """Inside the block, rig changes notify the listeners once per object, at the end (a
    group write is one live update instead of 80)."""
    global _deferred
    if _deferred is not None:  # nested: the outermost block notifies
        yield
        return
    _deferred = []
    try:
        yield
    finally:
        owners, _deferred = _deferred, None
        for owner in owners:
            notify_rig_changed(owner)


def _rig_changed(self: PropertyGroup, _context: Context | None) -> None:
    notify_rig_changed(self.id_data)


def _layer_start_changed(self: NFR_SefaSlider, context: Context | None) -> None:
    if self.layer_end < self.layer_start:
        self.layer_end = self.layer_start
    _rig_changed(self, context)


def _layer_end_changed(self: NFR_SefaSlider, context: Context | None) -> None:
    if self.layer_start > self.layer_end:
        self.layer_start = self.layer_end
    _rig_changed(self, context)


# -- property groups ----------------------------------------------------------------------------

_OVERRIDABLE = {"LIBRARY_OVERRIDABLE"}  # linked characters are animated through overrides
# Blender 4.5+ warns about "//" paths unless the property declares it takes them (4.2-4.4 do
# not know the option and accept them anyway).
_BLEND_RELATIVE_PATH = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()


def _coefficient_property(group: str, index: int) -> FloatProperty:
    soft = float(SOFT_RANGES[group][index])
    hard = HARD_LIMITS[group][index]
    return FloatProperty(
        name=coefficient_label(group, index),
        description=_coefficient_description(group, index),
        default=0.0,
        min=-hard,
        max=hard,
        soft_min=-soft,
        soft_max=soft,
        precision=3,
        subtype="ANGLE" if group == "rotation" else "NONE",
        update=_rig_changed,
        override=_OVERRIDABLE,
    )


def _make_group_class(group: str, size: int) -> type[PropertyGroup]:
    annotations = {coefficient_key(i): _coefficient_property(group, i) for i in range(size)}
    name = f"NFR_Rig{GROUP_LABELS[group]}"
    doc = f"{GROUP_LABELS[group]} coefficients of the face rig ({size} values)."
    return type(name, (PropertyGroup,), {"__annotations__": annotations, "__doc__": doc})


GROUP_CLASSES: dict[str, type[PropertyGroup]] = {
    name: _make_group_class(name, size) for name, size in GROUPS
}


class NFR_SefaSlider(PropertyGroup):
    """One SeFa slider: ``value`` times direction ``direction`` added to the W+ rows
    ``layer_start`` .. ``layer_end`` (inclusive)."""

    label: StringProperty(name="Label", description="Your name for this slider", default="")
    direction: IntProperty(
        name="Direction",
        description="Index of the SeFa direction (0: the strongest for these layers)",
        min=0,
        default=0,
        update=_rig_changed,
        options=set(),
    )
    layer_start: IntProperty(
        name="First Layer",
        description="First W+ row the direction edits (0: coarsest, 4 px)",
        min=0,
        default=0,
        update=_layer_start_changed,
        options=set(),
    )
    layer_end: IntProperty(
        name="Last Layer",
        description="Last W+ row the direction edits (inclusive)",
        min=0,
        default=0,
        update=_layer_end_changed,
        options=set(),
    )
    value: FloatProperty(
        name="Value",
        description="How far to move along the direction (in units of the unit direction)",
        default=0.0,
        min=-100.0,
        max=100.0,
        soft_min=-10.0,
        soft_max=10.0,
        precision=3,
        update=_rig_changed,
        override=_OVERRIDABLE,
    )


class NFR_ModelFile(PropertyGroup):
    """One model file a rig needs, as the .blend records it: a farm node that lacks the
    artist's path finds the file in its own models folder by name, or by digest."""

    role: StringProperty(name="Role", description="What the backend reads it as", default="",
                         options=set())
    filename: StringProperty(name="File Name", default="", options=set())
    size: StringProperty(name="Size", description="Bytes (text: files pass 2 GiB)", default="",
                         options=set())
    sha256: StringProperty(name="SHA-256", description="Digest of the file's bytes (empty: "
                           "not computed yet)", default="", options=set())


def _model_path_changed(self: PropertyGroup, context: Context | None) -> None:
    from . import rig_models  # reads files: not needed at import time

    rig_models.model_path_changed(self.id_data)
    _rig_changed(self, context)


class NFR_FaceRig(PropertyGroup):
    """A face rig: rig coefficients per group, SeFa sliders and the model that renders them.
    The rig groups (``identity``, ``expression``, ...) are added from rig.params.GROUPS."""

    is_rig: BoolProperty(
        name="Is Face Rig",
        description="This object is a face rig (set by Add Face Rig)",
        default=False,
        options=set(),
    )
    backend: EnumProperty(
        name="Backend",
        description="How the rig values become a face",
        items=BACKEND_ITEMS,
        default=catalogue.DEFAULT_BACKEND,
        update=_rig_changed,
    )
    model_path: StringProperty(
        name="Model",
        description="Generator checkpoint for this rig (empty: the preferences' default)",
        subtype="FILE_PATH",
        default="",
        update=_model_path_changed,
        options=_BLEND_RELATIVE_PATH,
    )
    seed: IntProperty(
        name="Seed",
        description="Base latent: the generator's latent for this seed",
        min=0,
        max=2**31 - 1,
        default=0,
        update=_rig_changed,
        override=_OVERRIDABLE,
    )
    psi: FloatProperty(
        name="Truncation",
        description="Truncation psi: 1 keeps the latent, smaller values move towards the mean "
        "face (more typical, less varied)",
        min=-1.0,
        max=2.0,
        soft_min=0.0,
        soft_max=1.0,
        default=0.7,
        update=_rig_changed,
        override=_OVERRIDABLE,
    )
    model_resolution: IntProperty(
        name="Model Resolution",
        description="Output size of the rig's model in pixels (0: not known yet); the "
        "resolution menus offer only the sizes it has",
        min=0,
        default=0,
        options=set(),
    )
    preview_resolution: EnumProperty(
        name="Preview",
        description="Resolution of the live viewport preview",
        items=resolution_items,
        default=_resolution_number("256"),
        update=_rig_changed,
    )
    render_resolution: EnumProperty(
        name="Render",
        description="Resolution of final renders and bakes",
        items=resolution_items,
        default=_resolution_number("FULL"),
    )
    image_name: StringProperty(
        name="Face Image",
        description="Name of the image the neural face is written into",
        default="",
        options=set(),
    )
    failure_placeholder: BoolProperty(
        name="Magenta on Failure",
        description="When this rig's face cannot be rendered in a background render (farm), "
        "render the frame with a magenta face instead of failing the render",
        default=False,
    )
    model_files: CollectionProperty(type=NFR_ModelFile, name="Model Files",
                                    description="The files this rig's face needs (name, size, "
                                    "digest), for machines where its paths do not exist")
    sefa_sliders: CollectionProperty(type=NFR_SefaSlider, name="SeFa Sliders")
    sefa_active_index: IntProperty(name="Active SeFa Slider", default=0, options=set())


# Rig groups and their "show all" toggles, from the schema (long groups only).
LONG_GROUP_SIZE = 10
for _name, _size in GROUPS:
    NFR_FaceRig.__annotations__[_name] = PointerProperty(
        type=GROUP_CLASSES[_name], name=GROUP_LABELS[_name], override=_OVERRIDABLE
    )
    if _size > LONG_GROUP_SIZE:
        NFR_FaceRig.__annotations__[f"show_all_{_name}"] = BoolProperty(
            name="Show All",
            description=f"Show all {_size} {GROUP_LABELS[_name].lower()} coefficients",
            default=False,
            options=set(),
        )

CLASSES = (*GROUP_CLASSES.values(), NFR_SefaSlider, NFR_ModelFile, NFR_FaceRig)
"""Register in this order (groups before the classes pointing at them)."""


def face_rig_property() -> PointerProperty:
    """The ``Object.face_rig`` property (attach after registering CLASSES)."""
    return PointerProperty(type=NFR_FaceRig, name="Face Rig", override=_OVERRIDABLE)


def is_face_rig(ob: Object | None) -> bool:
    """True for an object made a face rig by Add Face Rig."""
    return ob is not None and ob.face_rig.is_rig
