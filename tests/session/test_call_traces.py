"""The session's sub-steps make exactly the reference's call sequences (tests/data/call_traces.txt)."""
import re
from pathlib import Path

import numpy as np
import pytest

import regional_widgets as rw
from regional_widgets import faithful
from regional_widgets.sampling import masks as masks_module

TRACES = (Path(__file__).parents[1] / "data" / "call_traces.txt").read_text()
MODEL = rw.models.ToyWorld(n_exemplars=60, image_size=16)


def recorded_traces():
    """{header: [normalised lines]} for every block of the golden file."""
    blocks = {}
    for block in TRACES.split("=== ")[1:]:
        header, _, body = block.partition(" ===\n")
        lines = [" ".join(line.split()) for line in body.splitlines()
                 if line.strip().startswith(("sample", "composite"))]
        blocks[header] = lines
    return blocks


def session_for(header):
    params = dict(re.findall(r"(\w+)=(\S+)", header))
    m1, m2 = np.zeros((16, 16), np.float32), np.zeros((16, 16), np.float32)
    m1[:8], m2[8:, :8] = 1, 1
    regs = [rw.Region(m, rw.SamplerConfig(positive="grass"), variation_seed=3, variation_strength=0.2) for m in (m1, m2)]
    latent = rw.empty_latent(MODEL, 16, 16)
    base = rw.SamplerConfig(positive="sky")
    restore = params.get("restore_latent", "True") == "True"
    if header.startswith("RegionalSamplerAdvanced"):
        return rw.RegionalSamplerSession(MODEL, latent, base=base, regions=regs, noise_seed=7, steps=int(params["steps"]),
                                         start_at_step=int(params["start"]), end_at_step=int(params["end"]),
                                         add_noise=params["add_noise"] == "True", restore_latent=restore)
    return rw.RegionalSamplerSession.regional_sampler(
        MODEL, latent, base=base, regions=regs, seed=7, seed_2nd=99, steps=int(params["steps"]),
        denoise=float(params["denoise"]), base_only_steps=int(params["base_only_steps"]),
        seed_2nd_mode=params.get("seed_2nd_mode", "ignore"), restore_latent=restore)


@pytest.mark.parametrize("header", list(recorded_traces()))
def test_sub_steps_make_the_reference_call_sequence(header, monkeypatch):
    session = session_for(header)
    log = []
    real_call, real_composite = faithful.sampler_call, masks_module.composite

    def logging_call(denoise, latent, **kw):
        ctx = session.context
        who = ["BASE", "R1", "R2"][[p.denoise for p in ctx.parts].index(denoise)]
        mask = kw["noise_mask"]
        where = "none" if mask is None else "inv" if mask is ctx.inv else "region"
        noise = kw["noise"]
        if noise is None:
            what = "None"
        else:
            seed = {id(v): k for k, v in ctx.noises.items()}[id(noise)]
            what = f"noise(seed={7 if seed == 'initial' else 99 if session.seed_2nd_mode != 'ignore' else 7})"
            what += "+touched" * len(session.regions)
        log.append(f"sample {who} add_noise={kw['add_noise']} [{kw['start']}->{kw['end']}] "
                   f"leftover={kw['leftover']} mask={where} noise={what}")
        return real_call(denoise, latent, **kw)

    def logging_composite(dst, src, mask, *outside):
        log.append("composite region result into base")
        return real_composite(dst, src, mask, *outside)

    monkeypatch.setattr(faithful, "sampler_call", logging_call)
    monkeypatch.setattr(masks_module, "composite", logging_composite)
    phases = []
    while not session.done:
        session.substep()
        phases.append(session.phase)
    assert log == recorded_traces()[header]
    # one sub-step per call or composite, and the phases name them
    assert len(phases) == len(log)
    kinds = [p[0] for p in phases]
    assert kinds[-1] == "finalize" and kinds.count("composite") == sum("composite" in line for line in log)


def test_returned_latent_has_no_final_base_step_under_restore():
    header = next(h for h in recorded_traces() if h.startswith("RegionalSamplerAdvanced") and "restore_latent=True" in h)
    session = session_for(header)
    session.run()
    before_final = session.history[len(session.history) - 2]
    assert session.result is before_final.base_latent  # the final base call was discarded
    assert not (session.latent - session.result).abs().max() == 0  # ...though it was computed
