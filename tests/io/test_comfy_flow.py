"""ComfyUI round trip of a session on a flow model: EmptySD3LatentImage for 16 channels,
ModelSamplingSD3 / ModelSamplingFlux where the shift is not the checkpoint's default, and back.

The extra node schemas are written from comfy_workflow_nodes.md ("Nodes for other model families")
and model_families.md §1.2-1.3, independently of `regional_widgets.io.comfy`."""
import json

import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets.io.comfy import ComfyWorkflowError, build_workflow, parse_workflow
from regional_widgets.models.base import with_model_sampling
from regional_widgets.persistence import comfy_description
from regional_widgets.sampling.model_sampling import ModelSamplingFlux, flux_shift
from tests.io import test_comfy

FLOW_NODES = ("EmptySD3LatentImage", "ModelSamplingSD3", "ModelSamplingFlux")  # in test_comfy's table
FLOW = rw.models.ToyWorld("sd3", n_exemplars=60, image_size=64, prediction="flow")  # SD3's own shift 3
FLOW_PIXELS = rw.models.ToyWorld(n_exemplars=60, image_size=64, prediction="flow")


def test_the_flow_nodes_are_in_the_independent_table():
    assert set(FLOW_NODES) <= set(test_comfy.SCHEMAS)


def session(model, node="RegionalSamplerAdvanced"):
    mask = np.zeros((64, 64), np.float32)
    mask[32:] = 1
    regions = [rw.Region(mask, rw.SamplerConfig("dpmpp_2m_sde", "simple", 2.5, "grass", "", 0.9))]
    base = rw.SamplerConfig("euler", "normal", 3.0, "sky", "brick", 1.0)
    params = dict(steps=5, noise_seed=3) if node == "RegionalSamplerAdvanced" else dict(steps=5, seed=3,
                                                                                         denoise=0.8)
    return rw.RegionalSamplerSession(model, rw.empty_latent(model, 64, 64), base=base, regions=regions, node=node,
                                     **params)


def nodes_of(graph, kind):
    return [i for i, n in graph.items() if n["class_type"] == kind]


def test_a_flow_session_with_the_default_shift_needs_only_the_sd3_latent(tmp_path):
    s = session(FLOW)
    s.to_comfy(tmp_path / "flow.json")
    graph = json.loads((tmp_path / "flow.json").read_text())
    test_comfy.validate_graph(graph)
    assert nodes_of(graph, "EmptySD3LatentImage") and not nodes_of(graph, "EmptyLatentImage")
    assert not nodes_of(graph, "ModelSamplingSD3") and not nodes_of(graph, "ModelSamplingFlux")
    back = rw.RegionalSamplerSession.from_comfy(tmp_path / "flow.json", FLOW)
    assert back.model is FLOW and back.latent_image.shape == (1, 16, 8, 8)
    assert torch.equal(back.run(), s.run())


@pytest.mark.parametrize("node", ["RegionalSamplerAdvanced", "RegionalSampler"])
def test_a_non_default_shift_travels_as_model_sampling_sd3(tmp_path, node):
    shifted = rw.models.ToyWorld("sd3", n_exemplars=60, image_size=64, prediction="flow", shift=2.0)
    s = session(shifted, node)
    s.to_comfy(tmp_path / "flow.json")
    graph = json.loads((tmp_path / "flow.json").read_text())
    test_comfy.validate_graph(graph)
    (patch,) = nodes_of(graph, "ModelSamplingSD3")
    assert graph[patch]["inputs"]["shift"] == 2.0
    ckpt = nodes_of(graph, "CheckpointLoaderSimple")[0]
    assert graph[patch]["inputs"]["model"] == [ckpt, 0]
    pipes = nodes_of(graph, "ToBasicPipe")
    assert len(pipes) == 2 and all(graph[p]["inputs"]["model"] == [patch, 0] for p in pipes)
    # imported onto the checkpoint's model (shift 3): the node re-samples it, and the run is the same
    back = rw.RegionalSamplerSession.from_comfy(tmp_path / "flow.json", FLOW)
    assert back.model.model_sampling.shift == 2.0 and FLOW.model_sampling.shift == 3.0
    assert torch.equal(back.model.sigmas, shifted.sigmas)
    assert torch.equal(back.run(), s.run())


def test_flux_mu_travels_as_model_sampling_flux():
    for mu, on_the_line in ((flux_shift(64, 64), True), (0.8, False)):
        model = with_model_sampling(FLOW, ModelSamplingFlux(mu))
        s = session(model)
        description = comfy_description(s, "flux.safetensors")
        graph, _ = build_workflow(description)
        test_comfy.validate_graph(graph)
        (patch,) = nodes_of(graph, "ModelSamplingFlux")
        inputs = graph[patch]["inputs"]
        assert (inputs["max_shift"], inputs["base_shift"]) == ((1.15, 0.5) if on_the_line else (mu, mu))
        assert (inputs["width"], inputs["height"]) == (64, 64)
        parsed = parse_workflow(graph)
        # the node's rule gives mu back (model_families.md §1.2: mu = base + (max - base)(T - 256)/3840)
        tokens = inputs["width"] * inputs["height"] / 256
        got = inputs["base_shift"] + (inputs["max_shift"] - inputs["base_shift"]) * (tokens - 256) / 3840
        assert abs(got - mu) < 1e-12 and parsed["model_sampling"]["class_type"] == "ModelSamplingFlux"
    assert model.spec is None and FLOW.spec is not None  # a Flux-sampled toy is not a constructor's model
    default = with_model_sampling(FLOW, ModelSamplingFlux(1.15))
    graph, _ = build_workflow(comfy_description(session(default), "flux.safetensors"))
    assert not nodes_of(graph, "ModelSamplingFlux")


def test_eps_and_pixel_flow_exports_are_unchanged(tmp_path):
    eps = rw.models.ToyWorld(n_exemplars=60, image_size=64)
    graph, _ = build_workflow(comfy_description(session(eps), "m.safetensors"))
    flow, _ = build_workflow(comfy_description(session(FLOW_PIXELS), "m.safetensors"))
    assert graph == flow and nodes_of(graph, "EmptyLatentImage")  # shift 3 is the checkpoint's own
    assert "model_sampling" not in parse_workflow(graph) and "node" not in parse_workflow(graph)["latent"]


def test_a_hand_written_flux_workflow_imports(tmp_path):
    s = session(FLOW)
    graph, masks = build_workflow(comfy_description(s, "flux1-dev.safetensors"))
    ckpt = nodes_of(graph, "CheckpointLoaderSimple")[0]
    graph["90"] = {"class_type": "ModelSamplingFlux", "inputs": {"model": [ckpt, 0], "max_shift": 1.15,
                                                                 "base_shift": 0.5, "width": 512, "height": 512}}
    for p in nodes_of(graph, "ToBasicPipe"):
        graph[p]["inputs"]["model"] = ["90", 0]
    (tmp_path / "flux.json").write_text(json.dumps(graph))
    for name, data in masks.items():
        (tmp_path / name).write_bytes(data)
    back = rw.RegionalSamplerSession.from_comfy(tmp_path / "flux.json", FLOW)
    assert isinstance(back.model.model_sampling, ModelSamplingFlux)
    assert abs(back.model.model_sampling.shift - 0.63) < 1e-12  # 512^2: the fixture's flux_node_shift
    assert torch.isfinite(back.run()).all()


def test_what_does_not_fit_is_refused(tmp_path):
    s = session(FLOW)
    s.to_comfy(tmp_path / "flow.json")
    sd = rw.models.ToyWorld("sd", n_exemplars=60, image_size=64)
    with pytest.raises(ComfyWorkflowError, match="EmptySD3LatentImage makes 16-channel latents"):
        rw.RegionalSamplerSession.from_comfy(tmp_path / "flow.json", sd)
    graph = json.loads((tmp_path / "flow.json").read_text())
    ckpt = nodes_of(graph, "CheckpointLoaderSimple")[0]
    graph["91"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": [ckpt, 0], "shift": 2.0}}
    graph["92"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": [ckpt, 0], "shift": 4.0}}
    pipes = nodes_of(graph, "ToBasicPipe")
    graph[pipes[0]]["inputs"]["model"], graph[pipes[1]]["inputs"]["model"] = ["91", 0], ["92", 0]
    with pytest.raises(ComfyWorkflowError, match="sampling is set differently by 91 .*92"):
        parse_workflow(graph)
    graph[pipes[1]]["inputs"]["model"] = ["91", 0]
    del graph["92"]
    graph["91"]["inputs"]["shift"] = 120.0
    with pytest.raises(ComfyWorkflowError, match="node 91 \\(ModelSamplingSD3\\) input shift"):
        parse_workflow(graph)
