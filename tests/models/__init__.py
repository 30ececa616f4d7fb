"""Models: ToyWorld, the diffusers families on tiny random weights, CFG, prompts, previews."""
