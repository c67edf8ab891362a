"""DiscoFaceGAN (Deng et al., CVPR 2020): a StyleGAN v1 whose mapping takes 3DMM coefficients.

``config`` (architecture, state layout), ``generator`` (torch StyleGAN v1), ``tf_reader``
(the released TF .pkl and converted files), ``adapter`` (rig -> input,
attribute-preserving truncation, identity-average W), ``backend`` (engine + the
"discofacegan" backend). Import the submodules directly; this package imports nothing. The
coefficient VAEs (numpy only, also used in Blender's process) are ``rig.dfg_vae``.
"""
