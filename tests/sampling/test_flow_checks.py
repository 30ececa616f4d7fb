"""Options the reference leaves EPS-only get an error naming why on a flow model, nothing on an EPS
model (spec model_families.md §2.5, regional_sampler.md §3.6.6). The sampler call's own use (sigma
lists refused, ddpm warned) is tested with the session in tests/session/test_flow_session.py."""
import pytest
import torch

from regional_widgets.sampling.flow_checks import check_flow_sigmas, check_sigma_factor
from regional_widgets.sampling.model_sampling import flux_model_sampling, sd15_model_sampling, sd3_model_sampling
from regional_widgets.sampling.schedules import calculate_sigmas

FLOW = [sd3_model_sampling(), flux_model_sampling()]


@pytest.mark.parametrize("ms", FLOW)
def test_sigma_factor_above_1_is_refused_on_flow_models(ms):
    with pytest.raises(ValueError, match=r"sigma_factor: 1.1 > 1 is EPS-only.*flow \(CONST\)"):
        check_sigma_factor(1.1, ms)

    class Model:
        model_sampling = ms

    with pytest.raises(ValueError, match="EPS-only"):
        check_sigma_factor(2, Model())
    check_sigma_factor(1.0, ms)
    check_sigma_factor(0.5, ms)
    check_sigma_factor(3.0, sd15_model_sampling())  # EPS: scaling sigma is the option's idea


@pytest.mark.parametrize("ms", FLOW)
def test_sigma_lists_above_1_are_refused(ms):
    sigmas = calculate_sigmas(ms, "simple", 10)
    check_flow_sigmas(sigmas)
    check_flow_sigmas(torch.zeros(0))
    with pytest.raises(ValueError, match=r"^sigmas: a flow \(CONST\) model's sigmas lie in \[0, 1\], got 1.1;"):
        check_flow_sigmas(sigmas * 1.1)
    ays_sd1 = torch.tensor([14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029, 0.0])
    with pytest.raises(ValueError, match="custom list: .*got 14.615.*AYS/GITS"):
        check_flow_sigmas(ays_sd1, "custom list")
