"""The artist's controls of a face rig: ``Object.face_controls`` (NFR_ArtistControls).

- ``named``: one 0..1 float per named expression control of rig.controls (ARKit names as
  property names, so data paths read ``face_controls.named.jawOpen``).
- ``preset`` / ``preset_weight``: an expression of the library (rig.expressions) mixed over
  the sliders: effective = slider + weight · (preset - slider). Choosing a preset copies its
  values into ``preset_values`` (hidden), so drivers and renders read plain properties.
- ``key_light``: azimuth, elevation, intensity, colour, ambient (rig.key_light), optionally
  following a Blender light object and the world colour.
- ``grab_head``: the 3DMM head object's rotation is the rig rotation (head_control).
- identity: two stored identities and a blend slider between them.

Every value is keyframable, saved with the .blend, and read from the evaluated object during
renders (controls_eval). Changes notify the live bridge like the rig's own properties.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    PointerProperty,
    StringProperty,
)
from bpy.types import Context, Object, PropertyGroup

from .properties import GROUP_CLASSES, notify_rig_changed
from .rig.controls import CONTROLS, UNDEFINABLE, Control
from .rig.expressions import PRESETS, preset
from .rig.key_light import DEFAULT_AMBIENT

_OVERRIDABLE = {"LIBRARY_OVERRIDABLE"}


def _changed(self: PropertyGroup, _context: Context | None) -> None:
    notify_rig_changed(self.id_data)


def control_label(c: Control) -> str:
    """UI label of a control: "Jaw Open", "Smile Left" (group prefix dropped)."""
    words = []
    for char in c.name:
        if char.isupper() and words:
            words.append(" ")
        words.append(char)
    text = "".join(words)
    stem = text.split(" ", 1)
    prefix = stem[0].lower()
    if len(stem) == 2 and prefix in ("mouth", "eye", "brow", "cheek", "nose") and stem[1] not in (
        "Left", "Right"
    ):
        text = stem[1]
    return text[0].upper() + text[1:]


def _control_property(c: Control) -> FloatProperty:
    return FloatProperty(
        name=control_label(c),
        description=f"{c.name} (ARKit): {c.description}",
        default=0.0,
        min=0.0,
        max=1.0,
        precision=3,
        update=_changed,
        override=_OVERRIDABLE,
    )


NFR_NamedControls = type(
    "NFR_NamedControls",
    (PropertyGroup,),
    {
        "__annotations__": {c.name: _control_property(c) for c in CONTROLS},
        "__doc__": "Named expression controls (ARKit names), 0..1 each. Not implemented, "
        "because 68 landmarks cannot define them: " + ", ".join(UNDEFINABLE),
    },
)

PRESET_ITEMS = tuple((p.name.upper(), p.label, p.description) for p in PRESETS)


def preset_name(identifier: str) -> str:
    """rig.expressions name of a PRESET_ITEMS identifier ("SMILE" -> "smile")."""
    return identifier.lower()


def _preset_chosen(self: NFR_ArtistControls, context: Context | None) -> None:
    values = preset(preset_name(self.preset)).values
    for c in CONTROLS:
        setattr(self.preset_values, c.name, float(values.get(c.name, 0.0)))
    _changed(self, context)


def _grab_changed(self: NFR_ArtistControls, context: Context | None) -> None:
    from .head_control import apply_grab  # bpy handlers and mesh code: not at import time

    apply_grab(self.id_data)
    _changed(self, context)


def _is_light(_self: PropertyGroup, ob: Object) -> bool:
    return ob.type == "LIGHT"


class NFR_KeyLight(PropertyGroup):
    """One key light and the ambient colour, as the rig's SH lighting (rig.key_light)."""

    azimuth: FloatProperty(
        name="Azimuth", description="Key light direction around the face in degrees: 0 from "
        "the camera, +90 from the image's right", default=0.0, min=-180.0, max=180.0,
        precision=1, update=_changed, override=_OVERRIDABLE)
    elevation: FloatProperty(
        name="Elevation", description="Key light height in degrees: 0 level with the face, "
        "+90 from straight above", default=0.0, min=-90.0, max=90.0, precision=1,
        update=_changed, override=_OVERRIDABLE)
    intensity: FloatProperty(
        name="Intensity", description="Key light strength: 1 adds the albedo times the cosine "
        "to the shading", default=0.0, min=0.0, max=10.0, soft_max=2.0, precision=3,
        update=_changed, override=_OVERRIDABLE)
    colour: FloatVectorProperty(
        name="Colour", description="Key light colour (linear RGB)", subtype="COLOR", size=3,
        default=(1.0, 1.0, 1.0), min=0.0, soft_max=1.0, update=_changed,
        override=_OVERRIDABLE)
    ambient: FloatVectorProperty(
        name="Ambient", description="Light from every direction (linear RGB); the default is "
        "the rig's built-in ambient", subtype="COLOR", size=3,
        default=(DEFAULT_AMBIENT,) * 3, min=0.0, soft_max=1.0, update=_changed,
        override=_OVERRIDABLE)
    follow: PointerProperty(
        type=Object, name="Follow Light", description="A light object whose direction (seen "
        "from the portrait camera), colour and power set the key light every frame",
        poll=_is_light, update=_changed, override=_OVERRIDABLE)
    power_scale: FloatProperty(
        name="Power Scale", description="Key intensity per unit of the followed light's "
        "strength (sun: strength; other lights: watts over 4π·distance²)", default=1.0,
        min=0.0, soft_max=10.0, precision=4, update=_changed, override=_OVERRIDABLE)
    world_ambient: BoolProperty(
        name="World as Ambient", description="While following a light, the scene's world "
        "colour is the ambient colour", default=True, update=_changed, override=_OVERRIDABLE)


IdentityGroup = GROUP_CLASSES["identity"]


class NFR_ArtistControls(PropertyGroup):
    """Named controls, expression preset, key light, head grab and identity blend."""

    named: PointerProperty(type=NFR_NamedControls, name="Named Controls",
                           override=_OVERRIDABLE)
    preset_values: PointerProperty(type=NFR_NamedControls, name="Preset Values",
                                   override=_OVERRIDABLE)
    preset: EnumProperty(name="Expression", description="Expression from the library, mixed "
                         "over the sliders by the preset weight", items=PRESET_ITEMS,
                         default="NEUTRAL", update=_preset_chosen)
    preset_weight: FloatProperty(
        name="Preset Weight", description="0 keeps the sliders, 1 shows exactly the preset",
        default=0.0, min=0.0, max=1.0, precision=3, update=_changed, override=_OVERRIDABLE)
    key_light: PointerProperty(type=NFR_KeyLight, name="Key Light", override=_OVERRIDABLE)
    grab_head: BoolProperty(
        name="Grab Head", description="Rotating the 3DMM head object sets the rig's rotation "
        "(and the rotation sliders turn the head)", default=False, update=_grab_changed,
        override=_OVERRIDABLE)
    identity_a: PointerProperty(type=IdentityGroup, name="Identity A", override=_OVERRIDABLE)
    identity_b: PointerProperty(type=IdentityGroup, name="Identity B", override=_OVERRIDABLE)
    use_identity_blend: BoolProperty(
        name="Blend Identities", description="The identity is a mix of the two stored "
        "identities instead of the Identity sliders", default=False, update=_changed,
        override=_OVERRIDABLE)
    identity_blend: FloatProperty(
        name="A ↔ B", description="0 is identity A, 1 is identity B", default=0.0, min=0.0,
        max=1.0, precision=3, update=_changed, override=_OVERRIDABLE)
    basis_store: StringProperty(
        name="Stored Controls", description="The face model's named-control directions, kept "
        "so machines without the face model render the same face", default="",
        options={"HIDDEN"})
    lock_identity: BoolProperty(
        name="Lock Identity", description="Randomise All leaves the identity alone",
        default=True, options=set())


CLASSES = (NFR_NamedControls, NFR_KeyLight, NFR_ArtistControls)
"""Register in this order (after properties.CLASSES: the identity group is reused)."""


def face_controls_property() -> PointerProperty:
    """The ``Object.face_controls`` property (attach after registering CLASSES)."""
    return PointerProperty(type=NFR_ArtistControls, name="Face Controls",
                           override=_OVERRIDABLE)


def attach() -> None:
    bpy.types.Object.face_controls = face_controls_property()


def detach() -> None:
    del bpy.types.Object.face_controls
