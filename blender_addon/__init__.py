# SPDX-License-Identifier: GPL-3.0-or-later
"""Neural Face Rig: a 3DMM face rig driving a neural face, as a Blender extension.

This module is only the extension's entry point. It must stay importable without ``bpy``
because the worker process, farm nodes and training jobs import ``rig`` and ``neural``
through this package; everything that touches Blender is imported inside register().
"""


def register() -> None:
    from . import registration

    registration.register()


def unregister() -> None:
    from . import registration

    registration.unregister()
