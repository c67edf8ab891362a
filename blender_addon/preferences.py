"""Add-on preferences: model files, the worker's Python and its packages, the device.

Blender drops an add-on's preferences when it is disabled, so every setting is also kept in
``preferences.json`` in the extension's user folder (written when a setting changes, read back
when the extension is enabled): disabling and enabling, or reinstalling, keeps the paths.

Nothing licensed ships with the extension, so every model file has a path field (empty: look
in the models folder) and, while it is missing or wrong, text saying what is needed, where
users get it and where to put it. The dependency box shows what the worker's Python has (from
the last check; drawing never starts a process) with install / re-check buttons and progress.
"""

from __future__ import annotations

import json
import os
import traceback

import bpy
from bpy.props import EnumProperty, StringProperty
from bpy.types import AddonPreferences, Context, UILayout

from . import dependencies, file_status
from .contract import catalogue
from .model_files import (
    FACE_MODEL,
    FACE_MODEL_FILENAME,
    MODEL_SETS,
    ModelFileStatus,
    face_model_problem,
    model_paths,
    models_folder,
)
from .rig.atomic import atomic_open

__all__ = [
    "FACE_MODEL_FILENAME",
    "NFR_AddonPreferences",
    "addon_preferences",
    "draw_model_status",
    "face_model_problem",
    "resolved_face_model_path",
]

SETTINGS_FILE = "preferences.json"
_restoring = False


def _settings_path(*, create: bool = False) -> str:
    return os.path.join(dependencies.extension_user_folder("", create=create), SETTINGS_FILE)


def _setting_changed(self: AddonPreferences, _context: Context | None) -> None:
    """Keep every setting in the user folder too (Blender forgets them on disable), and make
    the panels look at the files again."""
    file_status.invalidate()
    if _restoring:
        return
    settings = {name: getattr(self, name) for name in _setting_names()}
    try:
        with atomic_open(_settings_path(create=True), "w", encoding="utf-8") as handle:
            json.dump(settings, handle, indent=1)
    except OSError as exc:  # a read-only user folder must not break the preferences
        print(f"Neural Face Rig: cannot keep the preferences in {_settings_path()}: {exc}")


def _setting_names() -> list[str]:
    return [name for name in NFR_AddonPreferences.__annotations__ if name != "bl_idname"]


def restore_settings(prefs: NFR_AddonPreferences) -> list[str]:
    """Set the settings kept in the user folder that ``prefs`` lacks (it was just enabled);
    returns their names. A damaged file is reported and ignored."""
    global _restoring
    path = _settings_path()
    try:
        with open(path, encoding="utf-8") as handle:
            settings = json.load(handle)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        print(f"Neural Face Rig: ignoring the kept preferences {path}: {exc}")
        return []
    restored = []
    _restoring = True
    try:
        for name in _setting_names():
            value = settings.get(name) if isinstance(settings, dict) else None
            default = NFR_AddonPreferences.bl_rna.properties[name].default
            if isinstance(value, str) and getattr(prefs, name) == default and value != default:
                try:
                    setattr(prefs, name, value)
                except TypeError:  # an enum value this version does not have
                    traceback.print_exc()
                    continue
                restored.append(name)
    finally:
        _restoring = False
    return restored


_BACKEND_TITLES = {spec.id: spec.title for spec in catalogue.BACKENDS.values()}


class NFR_AddonPreferences(AddonPreferences):
    """Neural Face Rig preferences."""

    # The extension's root package, e.g. "bl_ext.user_default.neural_face_rig".
    bl_idname = __package__

    face_model_path: StringProperty(
        name="Face Model",
        description=f"Path of {FACE_MODEL_FILENAME} (made with 'nfr rig convert-bfm')",
        subtype="FILE_PATH",
        default="",
        update=_setting_changed,
    )
    models_dir: StringProperty(
        name="Models Folder",
        description="Folder searched for model files whose path is empty (empty: the "
        "extension's user folder 'models')",
        subtype="DIR_PATH",
        default="",
        update=_setting_changed,
    )
    stylegan2_generator_path: StringProperty(
        name="StyleGAN2 Generator",
        description="StyleGAN2 checkpoint: NVIDIA .pkl, rosinality/e4e .pt or converted "
        ".safetensors (used by the StyleGAN2 and StyleRig backends)",
        subtype="FILE_PATH",
        default="",
        update=_setting_changed,
    )
    dfg_generator_path: StringProperty(
        name="DiscoFaceGAN Generator",
        description="DiscoFaceGAN's TensorFlow .pkl or its converted .safetensors",
        subtype="FILE_PATH",
        default="",
        update=_setting_changed,
    )
    dfg_average_w_path: StringProperty(
        name="DiscoFaceGAN Average W",
        description="The generator's average_w_id text file (identity-average W)",
        subtype="FILE_PATH",
        default="",
        update=_setting_changed,
    )
    dfg_vae_dir: StringProperty(
        name="DiscoFaceGAN VAE Folder",
        description="DiscoFaceGAN's vae/weights folder (id, exp, gamma, rot)",
        subtype="DIR_PATH",
        default="",
        update=_setting_changed,
    )
    rignet_path: StringProperty(
        name="StyleRig RigNet",
        description="RigNet .safetensors trained for the StyleGAN2 generator "
        "('nfr train rignet')",
        subtype="FILE_PATH",
        default="",
        update=_setting_changed,
    )
    device: EnumProperty(
        name="Device",
        description="Where the worker runs the networks",
        items=catalogue.DEVICE_ITEMS,
        default="AUTO",
        update=_setting_changed,
    )
    worker_python: EnumProperty(
        name="Worker Python",
        description="The Python interpreter that runs the inference worker",
        items=(
            ("BLENDER", "Blender's Python",
             "Blender's bundled Python, with packages installed into the extension's user folder"),
            ("EXTERNAL", "External Python",
             "Another Python (a venv or conda environment) that has the packages, e.g. CUDA torch"),
        ),
        default="BLENDER",
        update=_setting_changed,
    )
    external_python: StringProperty(
        name="External Python",
        description="Python executable (or environment folder) for the worker",
        subtype="FILE_PATH",
        default="",
        update=_setting_changed,
    )

    def draw(self, context: Context) -> None:
        sections = (
            ("3D Morphable Face Model (the head mesh)", draw_face_model_section),
            ("Neural Models", draw_models_section),
            ("Inference Worker", draw_worker_section),
        )
        for title, draw_section in sections:
            box = self.layout.box()
            box.label(text=title)
            draw_section(box, self)


def addon_preferences(context: Context) -> NFR_AddonPreferences:
    """This extension's preferences (the extension must be enabled)."""
    return context.preferences.addons[__package__].preferences


def resolved_face_model_path(prefs: NFR_AddonPreferences) -> str:
    """The face-model path with ``//`` expanded, or the models folder's copy ('' if none)."""
    return model_paths(prefs, "face_model")[FACE_MODEL.role]


# ------------------------------------------------------------------ drawing


def draw_model_status(
    layout: UILayout, statuses: list[ModelFileStatus], *, show_help: bool = True
) -> None:
    """One line per file (its name when fine, the problem when not), followed by how to get
    each problem file when ``show_help``. Used by the preferences and the Face Rig panel."""
    for status in statuses:
        col = layout.column(align=True)
        if status.ok:
            col.label(text=f"{status.label}: {bpy.path.basename(status.path)}", icon="CHECKMARK")
            continue
        icon = "ERROR" if status.required else "INFO"
        col.label(text=status.problem or "", icon=icon)
        if not status.required:
            col.label(text="Optional.")
        if show_help:
            for line in status.how_to_get:
                col.label(text=line)


def draw_face_model_section(layout: UILayout, prefs: NFR_AddonPreferences) -> None:
    layout.prop(prefs, "face_model_path")
    statuses = file_status.model_status(prefs, "face_model")
    if not statuses[0].ok:
        draw_model_status(layout, statuses)


def draw_models_section(layout: UILayout, prefs: NFR_AddonPreferences) -> None:
    layout.prop(prefs, "models_dir")
    if not prefs.models_dir:
        layout.label(text=f"Default: {models_folder(prefs)}")
    shown: set[str] = set()
    for backend, title in _BACKEND_TITLES.items():
        col = layout.column()
        col.label(text=title)
        statuses = file_status.model_status(prefs, backend)
        for spec, status in zip(MODEL_SETS[backend], statuses, strict=True):
            if spec.pref in shown:  # StyleRig runs on the StyleGAN2 generator above
                col.label(text=f"Uses the {spec.noun} above.")
                continue
            shown.add(spec.pref)
            col.prop(prefs, spec.pref)
            draw_model_status(col, [status])


def draw_worker_section(layout: UILayout, prefs: NFR_AddonPreferences) -> None:
    """Worker Python, device, package status, install / check buttons and progress."""
    layout.row().prop(prefs, "worker_python", expand=True)
    if not dependencies.uses_blender_python(prefs):
        layout.prop(prefs, "external_python")
    try:
        python, _ = dependencies.worker_python(prefs)
    except dependencies.DependencyError as exc:
        layout.label(text=str(exc), icon="ERROR")
        return
    layout.label(text=f"Python: {python}")
    report = dependencies.cached_report(prefs)
    layout.row().prop(prefs, "device", expand=True)
    _device, device_problem = dependencies.resolve_device(prefs, report)
    if device_problem is not None:
        layout.label(text=device_problem, icon="ERROR")

    col = layout.column(align=True)
    if report is None:
        col.label(text="Python packages not checked yet.", icon="QUESTION")
    else:
        _draw_report(col, report)

    task = dependencies.active_task()
    if task is not None:
        layout.progress(factor=task.progress, text=task.status_text())
        layout.label(text=f"{task.title}; press Esc to cancel.")
    row = layout.row()
    row.enabled = task is None
    if report is not None and report.missing and dependencies.uses_blender_python(prefs):
        row.operator("nfr.install_dependencies", icon="IMPORT")
    row.operator("nfr.check_dependencies", icon="FILE_REFRESH")
    if report is not None and report.missing and dependencies.uses_blender_python(prefs):
        notes = layout.column(align=True)
        for line in dependencies.install_notes(prefs):
            notes.label(text=line)


def _draw_report(layout: UILayout, report: dependencies.DependencyReport) -> None:
    if report.error is not None:
        layout.label(text=report.error, icon="ERROR")
        return
    layout.label(text=f"Python {report.python_version}" + (
        "" if report.python_version.startswith(dependencies.TESTED_PYTHON)
        else f" (tested with {dependencies.TESTED_PYTHON})"))
    for package in report.packages:
        icon = {"ok": "CHECKMARK", "other-version": "INFO"}.get(package.state, "ERROR")
        layout.label(text=package.describe(), icon=icon)
    for problem in report.problems()[len(report.missing):]:
        layout.label(text=problem, icon="ERROR")
    layout.label(text=report.device_summary())
    layout.label(text=report.cpu_summary())
