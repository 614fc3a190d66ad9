"""LightningModules: the SRGAN (``sr.SRGANTask``) and the centre-patch classifier."""
