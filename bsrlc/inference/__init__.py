"""Inference over whole rasters: tile planning with feathered blending, and streamed SR to COGs."""
