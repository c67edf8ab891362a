"""The portrait setup: the card that shows the neural face, its camera, the render and colour
settings under which a render equals the generator's output, and the co-registered head.

Geometry (metres, Blender frame; the rig object is the card, everything else its child):

- The portrait camera is the generator's own crop camera, ``rig.camera.CAMERA_256``
  (DiscoFaceGAN's: focal 1238.3 px over 256 px, 10 dm from the face model's origin), looking
  down +Y with Z up. Its frame is square.
- The card is a square emission plane ``CARD_BEHIND`` behind the head, sized to fill the
  camera's frame exactly, so render pixel (i, j) sees face-image texel (i, j) when the render
  and image resolutions match.
- Co-registered means: the 3DMM head sits at the face model's origin (its basis is the
  recentred mean shape, like rig.geometry) and turns with the rig's rotation, so its
  projection through the portrait camera is the 3DMM projection DiscoFaceGAN is trained on
  (rig.camera.project with CAMERA_256): every vertex lands on the card where the generator
  draws that point of the face. Translation is not applied: DiscoFaceGAN's crop is centred.
  The head is a viewport guide (wireframe) and never renders.

Colour: the face image holds linear values decoded from the generator's sRGB output; the
card's emission shows them at strength 1; the "Standard" view transform (Blender's default
AgX would tone-map them) encodes them back to sRGB. With texel-sized pixels sampled by a box
filter (Cycles), or at pixel centres (EEVEE, Workbench: no anti-aliasing), the rendered
portrait equals the generator's output within the 8-bit rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import bpy
from bpy.types import Collection, Image, Material, Object, Scene

from .materials import empty_node_material
from .rig.blender_mesh import DECIMETRES_TO_METRES
from .rig.camera import CAMERA_256, Camera

CARD_BEHIND = 0.5  # metres between the head's origin and the card
FACE_NODE = "NFR Face"
VIEW_TRANSFORM = "Standard"
CYCLES_SAMPLES = 16
HEAD_DRIVEN_GROUPS = ("identity", "expression")
# Blender's "XZY" Euler (R = Ry·Rz·Rx) of the rig's R = Rz·Ry·Rx seen in Blender's axes
# (model y -> Blender z, model z -> Blender -y): (x, y, z) = (pitch, -roll, yaw).
HEAD_ROTATION_MODE = "XZY"
_ROTATION_DRIVERS = ((0, 0, "v"), (1, 2, "-v"), (2, 1, "v"))  # (Euler axis, coefficient, expr)


@dataclass(frozen=True)
class PortraitLayout:
    """Distances (metres) along the view axis and the card's side, from a rig camera."""

    camera: Camera
    head_distance: float  # camera -> head origin
    card_distance: float  # camera -> card

    @property
    def card_size(self) -> float:
        """Side of the card that exactly fills the camera's square frame."""
        return 2.0 * self.card_distance * math.tan(0.5 * self.camera.fov)

    @property
    def lens(self) -> float:
        """Focal length in mm for Blender's 36 mm sensor (horizontal fit)."""
        return self.camera.focal / self.camera.size * 36.0


def portrait_layout(
    camera: Camera = CAMERA_256, card_behind: float = CARD_BEHIND
) -> PortraitLayout:
    head = camera.distance * DECIMETRES_TO_METRES
    return PortraitLayout(camera, head, head + card_behind)


# ------------------------------------------------------------------ card and camera


def build_card(name: str, collection: Collection, layout: PortraitLayout, image: Image) -> Object:
    """A square plane facing -Y (towards the camera), UVs 0..1, showing ``image`` through an
    emission material; the object's origin is the card's centre."""
    half = 0.5 * layout.card_size
    mesh = bpy.data.meshes.new(name)
    # Counter-clockwise seen from -Y: the face normal points at the camera.
    corners = [(-half, 0.0, -half), (half, 0.0, -half), (half, 0.0, half), (-half, 0.0, half)]
    mesh.from_pydata(corners, [], [(0, 1, 2, 3)])
    uv = mesh.uv_layers.new(name="UVMap")
    uv.data.foreach_set("uv", [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    mesh.materials.append(face_material(f"{name} Face", image))
    card = bpy.data.objects.new(name, mesh)
    collection.objects.link(card)
    return card


def face_material(name: str, image: Image) -> Material:
    """Image (closest texel) -> Emission (strength 1) -> output: the image's values as they
    are, whatever the lights. Workbench shows the node as the active texture."""
    material = empty_node_material(name)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    texture = nodes.new("ShaderNodeTexImage")
    texture.name = texture.label = FACE_NODE
    texture.image = image
    texture.interpolation = "Closest"
    texture.extension = "EXTEND"
    texture.location = (-350.0, 0.0)
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    output = nodes.new("ShaderNodeOutputMaterial")
    output.location = (250.0, 0.0)
    links.new(texture.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], output.inputs["Surface"])
    nodes.active = texture
    return material


def face_node(card: Object):
    """The card material's face image node, or None (the user rebuilt the material)."""
    material = card.active_material
    if material is None or material.node_tree is None:
        return None
    return material.node_tree.nodes.get(FACE_NODE)


def show_sequence(card: Object, first_frame_path: str, frame_start: int, count: int) -> Image:
    """Make the card show a baked image sequence (files numbered by scene frame, 16-bit sRGB
    PNGs) from scene frame ``frame_start`` on; the live face image stays as it is."""
    node = face_node(card)
    if node is None:
        raise ValueError(f"{card.name}: its material has no '{FACE_NODE}' image node")
    image = bpy.data.images.load(first_frame_path, check_existing=False)
    image.name = f"{card.name} Face Sequence"
    image.source = "SEQUENCE"
    image.colorspace_settings.name = "sRGB"
    if bpy.data.filepath:
        image.filepath = bpy.path.relpath(bpy.path.abspath(first_frame_path))
    node.image = image
    user = node.image_user
    user.frame_start = frame_start
    user.frame_offset = frame_start - 1  # file number = scene frame
    user.frame_duration = count
    user.use_auto_refresh = True
    user.use_cyclic = False
    return image


def show_live(card: Object, image: Image) -> None:
    """Make the card show the live face image again."""
    node = face_node(card)
    if node is None:
        raise ValueError(f"{card.name}: its material has no '{FACE_NODE}' image node")
    node.image = image


def build_camera(name: str, collection: Collection, layout: PortraitLayout, card: Object) -> Object:
    """The portrait camera, a child of the card, ``card_distance`` in front of it."""
    data = bpy.data.cameras.new(name)
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width = 36.0
    data.lens = layout.lens
    data.clip_start = 0.01
    data.clip_end = 100.0
    camera = bpy.data.objects.new(name, data)
    camera.parent = card
    camera.location = (0.0, -layout.card_distance, 0.0)
    camera.rotation_euler = (0.5 * math.pi, 0.0, 0.0)  # cameras look down their local -Z
    collection.objects.link(camera)
    return camera


# ------------------------------------------------------------------ render and colour


def setup_colour(scene: Scene) -> None:
    """Show float values as they are: "Standard" view (not AgX), no look, exposure 0,
    gamma 1, sRGB display, no dithering noise in 8-bit files."""
    scene.display_settings.display_device = "sRGB"
    scene.view_settings.view_transform = VIEW_TRANSFORM
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.render.dither_intensity = 0.0


def colour_problem(scene: Scene) -> str | None:
    """Why a render of ``scene`` would not show the generator's colours (for the Output
    panel), or None: the colour settings ``setup_colour`` makes must still be in place."""
    view = scene.view_settings
    if view.view_transform != VIEW_TRANSFORM:
        return (f"View transform is '{view.view_transform}': renders change the face's "
                f"colours; set '{VIEW_TRANSFORM}' (Render Properties > Color Management)")
    if view.look != "None" or view.exposure != 0.0 or view.gamma != 1.0:
        return "Color Management look, exposure or gamma are set: renders change the colours"
    return None


def setup_render(scene: Scene, size: int) -> None:
    """Square ``size`` px output; each engine samples texel-exact: Cycles box filter of one
    pixel, EEVEE one centred sample, Workbench textured, unlit, no anti-aliasing."""
    render = scene.render
    render.resolution_x = render.resolution_y = size
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.film_transparent = False
    render.filter_size = 0.0
    render.use_lock_interface = True  # frame handlers write images during renders
    cycles = getattr(scene, "cycles", None)
    if cycles is not None:
        cycles.pixel_filter_type = "BOX"
        cycles.filter_width = 1.0
        cycles.samples = CYCLES_SAMPLES
        cycles.use_denoising = False
    scene.eevee.taa_render_samples = 1
    shading = scene.display.shading
    shading.light = "FLAT"
    shading.color_type = "TEXTURE"
    scene.display.render_aa = "OFF"
    setup_colour(scene)


# ------------------------------------------------------------------ the head


def place_head(head: Object, card: Object, layout: PortraitLayout) -> None:
    """Parent ``head`` to the card at the face model's origin (``head_distance`` in front of
    the camera) and make it a wireframe guide that never renders."""
    head.parent = card
    head.location = (0.0, layout.head_distance - layout.card_distance, 0.0)
    head.display_type = "WIRE"
    head.hide_render = True


def drive_head(head: Object, rig: Object) -> None:
    """Drivers: each identity/expression shape key follows the rig's coefficient, the head's
    rotation the rig's pitch, yaw and roll (no Python: simple expressions only)."""
    keys = head.data.shape_keys.key_blocks
    for group in HEAD_DRIVEN_GROUPS:
        for key in keys:
            prefix = f"{group}_"
            if key.name.startswith(prefix):
                index = int(key.name[len(prefix):])
                _drive(key, "value", -1, rig, f"face_rig.{group}.c{index:03d}", "v")
    head.rotation_mode = HEAD_ROTATION_MODE
    for axis, coefficient, expression in _ROTATION_DRIVERS:
        _drive(head, "rotation_euler", axis, rig, f"face_rig.rotation.c{coefficient:03d}",
               expression)


def _drive(owner, path: str, index: int, rig: Object, source: str, expression: str) -> None:
    fcurve = owner.driver_add(path, index) if index >= 0 else owner.driver_add(path)
    driver = fcurve.driver
    variable = driver.variables.new()
    variable.name = "v"
    variable.type = "SINGLE_PROP"
    variable.targets[0].id_type = "OBJECT"
    variable.targets[0].id = rig
    variable.targets[0].data_path = source
    # A plain copy needs no expression; "-v" is one Blender evaluates without Python.
    if expression == "v":
        driver.type = "AVERAGE"
    else:
        driver.type = "SCRIPTED"
        driver.expression = expression
