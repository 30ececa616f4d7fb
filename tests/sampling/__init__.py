"""The sampling layer against the reference's fixtures: model sampling, schedules, samplers, noise, masks."""
