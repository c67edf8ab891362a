"""Blender operators, one module per family of user actions: thin calls into the extension's
services (blender_addon/)."""
