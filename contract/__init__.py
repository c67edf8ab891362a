"""The contract between Blender's side and the inference worker, owned by neither.

stdlib + numpy only: Blender's bundled Python imports it (the add-on never imports
``neural``, so never torch), and so does the worker.

- ``catalogue``: the backends (id, label, file roles, default resolution, the rig groups and
  controls each honours, SeFa and estimate support) and the device, precision and
  noise-mode vocabularies;
- ``state``: ``RigState``, the plain-data snapshot of everything that determines a frame;
- ``protocol``: the worker's messages and jobs (JSON lines, pixels in shared memory);
- ``latest``: the latest-wins rule of requests and images;
- ``errors``: ``ContractError``.
"""
