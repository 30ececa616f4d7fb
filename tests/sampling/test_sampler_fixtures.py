"""Every sampler against the reference's own outputs on the fixtures' closed-form denoiser."""
import pytest
import torch

from regional_widgets.sampling import samplers
from tests.oracles import (FixtureNoise, fixture_denoiser, fixture_sigmas, fixture_start,
                           sampler_fixtures)

CASES = sorted(sampler_fixtures())


@pytest.mark.parametrize("key", CASES)
def test_sampler_matches_reference_fixture(key):
    name, case, part = key.split("/")
    sigmas = fixture_sigmas(case, part)
    x = fixture_start(sigmas)
    spec = samplers.get_sampler(name)
    noise = FixtureNoise() if spec.noise else None
    out = samplers.sample(fixture_denoiser(), x, sigmas, name, noise_sampler=noise)
    expected = torch.tensor(sampler_fixtures()[key]).view_as(out)
    assert (out - expected).abs().max().item() <= 1e-5
