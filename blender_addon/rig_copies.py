"""Copies of a rig get their own face: Shift+D, Alt+D, copy-paste and append copy the card with
its ``face_rig.image_name`` and its material, so without this a slider on the copy would
repaint the original's card.

After every depsgraph update (``depsgraph_update_post``) the number of objects is compared
with the last one seen, a single integer comparison on the main thread; only when objects
were added are the rigs scanned for image names claimed twice. Every rig but the image's
owner (recorded on the image as ``nfr_rig``; the original keeps its name, a copy gets
".001") then gets a new face image starting with the original's pixels, its own card mesh
when the mesh is shared, its own material showing the new image, and a live update. Opening
a file runs the same check (files saved before this existed may hold shared faces).
"""

from __future__ import annotations

import bpy
from bpy.app.handlers import persistent
from bpy.types import Image, Object

from . import face_image, portrait
from .properties import is_face_rig

OWNER_KEY = "nfr_rig"
DEFAULT_SIZE = 256

_object_count = -1


def shared_faces() -> dict[str, list[Object]]:
    """Face image name -> the local rigs claiming it, for names claimed more than once."""
    claims: dict[str, list[Object]] = {}
    for ob in bpy.data.objects:
        if ob.library is None and is_face_rig(ob) and ob.face_rig.image_name:
            claims.setdefault(ob.face_rig.image_name, []).append(ob)
    for name, rigs in list(claims.items()):
        image = bpy.data.images.get(name)
        if len(rigs) == 1:
            if image is not None and image.get(OWNER_KEY) != rigs[0].name:
                image[OWNER_KEY] = rigs[0].name  # follows renames of the single user
            del claims[name]
    return claims


def _owner(image_name: str, rigs: list[Object]) -> Object:
    image = bpy.data.images.get(image_name)
    recorded = image.get(OWNER_KEY) if image is not None else None
    for ob in rigs:
        if ob.name == recorded:
            return ob
    return min(rigs, key=lambda ob: (len(ob.name), ob.name))


def _unused_image_name(base: str) -> str:
    name, index = base, 1
    while name in bpy.data.images:
        name = f"{base}.{index:03d}"
        index += 1
    return name


def give_own_face(ob: Object) -> Image:
    """A new face image, mesh (if shared) and card material for ``ob``; returns the image."""
    old = bpy.data.images.get(ob.face_rig.image_name)
    size = old.size[0] if old is not None and old.size[0] else DEFAULT_SIZE
    image = face_image.ensure_face_image(_unused_image_name(f"{ob.name} Face"), size)
    if old is not None and old.has_data and tuple(old.size) == (size, size):
        face_image.write_pixels(image, face_image.read_pixels(old), size)
    image[OWNER_KEY] = ob.name
    if ob.data is not None and ob.data.users > 1:  # Alt+D: the material may sit on the mesh
        ob.data = ob.data.copy()
    for slot in ob.material_slots:
        material = slot.material
        if material is None or material.node_tree is None:
            continue
        node = material.node_tree.nodes.get(portrait.FACE_NODE)
        if node is None or node.image != old:  # a baked sequence stays shared
            continue
        copy = material.copy()
        copy.name = f"{ob.name} Face"
        copy.node_tree.nodes[portrait.FACE_NODE].image = image
        slot.material = copy
    ob.face_rig.image_name = image.name
    return image


def separate_copies() -> list[Object]:
    """Give every rig that shares its face with another one its own; returns those rigs."""
    changed = []
    for name, rigs in shared_faces().items():
        owner = _owner(name, rigs)
        for ob in rigs:
            if ob != owner:
                give_own_face(ob)
                changed.append(ob)
    if changed:
        from . import live  # the worker bridge, only once there is a copy to show

        for ob in changed:
            live.request_update(ob)
    return changed


@persistent
def on_depsgraph_update(*_args: object) -> None:
    global _object_count
    count = len(bpy.data.objects)
    if count == _object_count or bpy.app.is_job_running("RENDER"):
        return  # a render owns the data now: copies are separated after it
    grew = count > _object_count
    _object_count = count
    if grew:
        separate_copies()


@persistent
def on_load_post(*_args: object) -> None:
    global _object_count
    _object_count = len(bpy.data.objects)
    separate_copies()


HANDLERS = (
    (bpy.app.handlers.depsgraph_update_post, on_depsgraph_update),
    (bpy.app.handlers.load_post, on_load_post),
)
