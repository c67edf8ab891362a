"""Blender UI panels: drawing only, no logic."""
