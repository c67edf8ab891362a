"""Materials the extension builds: one way to start a node material on Blender 4.2-5.x."""

from __future__ import annotations

import bpy
from bpy.types import Material


def empty_node_material(name: str) -> Material:
    """A new material with an empty node tree, ready for the caller's nodes."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender < 5.0 creates materials without nodes
        material.use_nodes = True
    material.node_tree.nodes.clear()
    return material
