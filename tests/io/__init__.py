"""Files in and out: paths, session folders, mask PNGs, ComfyUI workflows."""
