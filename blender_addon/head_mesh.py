"""Build the face rig's head: a mesh object with one shape key per identity and expression
coefficient, the model's mean albedo as a colour attribute and a material that shows it.

The arrays come from rig.blender_mesh (numpy); this module only hands them to bpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import bpy
import numpy as np
from bpy.types import Collection, Material, Mesh, Object

from .materials import empty_node_material
from .rig.blender_mesh import BlenderFaceMesh, blender_face_mesh, vertex_albedo
from .rig.face_model import N_REFLECTANCE, FaceModel

HEAD_NAME = "FaceRigHead"
BASIS_KEY_NAME = "Basis"
ALBEDO_ATTRIBUTE = "albedo"
# Coefficients are in standard deviations; ±5 σ covers every plausible face.
SHAPE_KEY_RANGE = 5.0
SHAPE_KEY_GROUPS = ("identity", "expression")


def shape_key_name(group: str, index: int) -> str:
    """Name of the shape key of coefficient ``index`` of ``group``, e.g. "expression_012"."""
    return f"{group}_{index:03d}"


def set_shape_key_values(head: Object, group: str, values: Sequence[float]) -> None:
    """Pose ``head``: the shape key of coefficient i of ``group`` ("identity" or "expression")
    takes ``values[i]`` (standard deviations; Blender clamps to the ±5 slider range)."""
    keys = head.data.shape_keys.key_blocks
    for index, value in enumerate(values):
        keys[shape_key_name(group, index)].value = value


def build_head(
    face_model: FaceModel,
    collection: Collection,
    *,
    name: str = HEAD_NAME,
    location: Sequence[float] = (0.0, 0.0, 0.0),
) -> Object:
    """Create the head object in ``collection`` and return it.

    Shape keys: "Basis" (the recentred mean shape) then identity_000… and expression_000…,
    each the offset of its coefficient at value 1.0, sliders from -5 to 5. Nothing is left in
    ``bpy.data`` if building fails.
    """
    arrays = blender_face_mesh(face_model)
    albedo = vertex_albedo(face_model, np.zeros(N_REFLECTANCE, np.float32))
    created: list[tuple[bpy.types.bpy_prop_collection, bpy.types.ID]] = []
    try:
        mesh = bpy.data.meshes.new(name)
        created.append((bpy.data.meshes, mesh))
        _fill_mesh(mesh, arrays)
        _add_albedo_attribute(mesh, albedo)
        material = _albedo_material(f"{name} Albedo")
        created.append((bpy.data.materials, material))
        mesh.materials.append(material)

        head = bpy.data.objects.new(name, mesh)
        created.append((bpy.data.objects, head))
        head.location = location
        _add_shape_keys(head, arrays)
        collection.objects.link(head)
    except BaseException:
        for data, datablock in reversed(created):
            data.remove(datablock)
        raise
    return head


def _fill_mesh(mesh: Mesh, arrays: BlenderFaceMesh) -> None:
    n_triangles = len(arrays.triangles)
    mesh.vertices.add(len(arrays.vertices))
    mesh.vertices.foreach_set("co", arrays.vertices.ravel())
    mesh.loops.add(3 * n_triangles)
    mesh.loops.foreach_set("vertex_index", arrays.triangles.ravel())
    mesh.polygons.add(n_triangles)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * n_triangles, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    mesh.shade_smooth()


def _add_albedo_attribute(mesh: Mesh, albedo: np.ndarray) -> None:
    """albedo [N, 3] sRGB-encoded 0..1 -> a per-vertex colour attribute (stored linear)."""
    rgba = np.ones((len(albedo), 4), np.float32)
    rgba[:, :3] = albedo
    attribute = mesh.color_attributes.new(ALBEDO_ATTRIBUTE, "FLOAT_COLOR", "POINT")
    # color_srgb lets Blender's colour management do the sRGB -> scene-linear conversion.
    attribute.data.foreach_set("color_srgb", rgba.ravel())
    mesh.color_attributes.active_color = attribute
    mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index


def _albedo_material(name: str) -> Material:
    """Principled BSDF whose base colour is the albedo attribute."""
    material = empty_node_material(name)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    attribute = nodes.new("ShaderNodeVertexColor")
    attribute.layer_name = ALBEDO_ATTRIBUTE
    attribute.location = (-300.0, 0.0)
    shader = nodes.new("ShaderNodeBsdfPrincipled")
    shader.inputs["Roughness"].default_value = 0.6
    output = nodes.new("ShaderNodeOutputMaterial")
    output.location = (300.0, 0.0)
    links.new(attribute.outputs["Color"], shader.inputs["Base Color"])
    links.new(shader.outputs["BSDF"], output.inputs["Surface"])
    return material


def _add_shape_keys(head: Object, arrays: BlenderFaceMesh) -> None:
    head.shape_key_add(name=BASIS_KEY_NAME, from_mix=False)
    for group in SHAPE_KEY_GROUPS:
        for index, offsets in enumerate(arrays.shape_keys[group]):
            key = head.shape_key_add(name=shape_key_name(group, index), from_mix=False)
            key.slider_min = -SHAPE_KEY_RANGE
            key.slider_max = SHAPE_KEY_RANGE
            key.value = 0.0  # shape_key_add starts keys at 1.0: the head must start neutral
            key.data.foreach_set("co", (arrays.vertices + offsets).ravel())

