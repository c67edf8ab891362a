"""DiscoFaceGAN (Deng et al., CVPR 2020): a StyleGAN v1 whose mapping takes 3DMM coefficients.

``config`` (architecture, state layout), ``generator`` (torch StyleGAN v1), ``tf_reader``
(the released TF .pkl and converted files), ``vae`` (the coefficient VAEs from TF
checkpoints, numpy only), ``adapter`` (rig -> input, attribute-preserving truncation,
identity-average W), ``backend`` (engine + the "discofacegan" backend). Import the
submodules directly; this package imports nothing (Blender loads ``vae`` without torch).
"""
