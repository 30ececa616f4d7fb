"""Plain data in and out (JSON, npz, safetensors, PNG); never pickle, never the session or widgets."""
