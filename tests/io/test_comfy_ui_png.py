"""The ComfyUI doorway: editor (UI-format) workflows and ComfyUI PNGs, in and out.

Round trips (session -> API / UI / PNG -> session: the same run, bit for bit), the exported graphs
against the node schemas (`test_comfy.validate_graph`), the written layout, a UI workflow built by
hand from the editor's rules (docs/comfyui.md) with reroutes, a PrimitiveNode, a converted
widget and a LoRA loader, choosing among samplers, and hostile files (nothing changes on disk).
"""
import io
import json
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import regional_widgets as rw
from regional_widgets.io.comfy import ComfyWorkflowError
from regional_widgets.io.comfy_files import ComfyImportWarning
from regional_widgets.io.paths import FileSafetyError

from .test_comfy import (BASE, EIGHT_BIT, HAND_WRITTEN, MODEL, PARAMS, REGION_CONFIGS, hand_written,  # noqa: F401
                         validate_graph)

RNG = np.random.default_rng(5)
MASKS = [(RNG.integers(0, 256, (64, 64)) / 255).astype(np.float32),  # 8-bit values: exact
         RNG.random((64, 64)).astype(np.float32),  # soft: within 1/510
         (RNG.random((64, 64)) > 0.6).astype(np.float32)]  # binary


def make_session(node, n_regions, batch=2):
    """test_comfy's non-default session at the built-in model's 64 x 64, so that it runs."""
    regions = [rw.Region(MASKS[j], **REGION_CONFIGS[j]) for j in range(n_regions)]
    return rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 64, 64, batch), base=BASE, regions=regions,
                                     node=node, **PARAMS[node])


def run_of(session):
    return session.run().clone()


def same_session(back, session):
    assert back.node == session.node and back.parameters() == session.parameters() and back.base == session.base
    for j, (a, b) in enumerate(zip(session.regions, back.regions)):
        assert b.config == a.config and (b.variation_seed, b.variation_strength, b.variation_method) == \
            (a.variation_seed, a.variation_strength, a.variation_method)
        assert np.abs(b.mask - a.mask).max() <= (0 if EIGHT_BIT[j] else 1 / 510 + 1e-7)
    assert len(back.regions) == len(session.regions)


def quantised(session):
    """The session with its masks at 8 bits, as every exported mask PNG holds them."""
    for region in session.regions:
        region.mask = np.round(region.mask * 255).astype(np.float32) / 255
    return session


def chunks_of(path):
    with Image.open(path, formats=["PNG"]) as image:
        return {k: json.loads(v) for k, v in image.info.items() if k in ("prompt", "workflow")}, image.info


def ui_to_api_by_rules(ui):
    """The editor's graph as the API graph, independently of the package: for our own written files
    (no reroutes), each link input -> [from node, slot]; widget values by the node tables' order."""
    links = {link[0]: link for link in ui["links"]}
    out = {}
    for node in ui["nodes"]:
        inputs = {e["name"]: [str(links[e["link"]][1]), links[e["link"]][2]] for e in node["inputs"]}
        out[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return out


@pytest.mark.parametrize("node", list(PARAMS))
def test_round_trips_api_ui_png_run_bit_identical(tmp_path, node):
    session = quantised(make_session(node, 3))
    expected = run_of(session)
    for kind in ("api", "ui", "png"):
        folder = tmp_path / kind
        folder.mkdir()
        if kind == "png":
            written = session.save_png(folder / "image.png")
            assert [p.name for p in written] == ["image.png"] + [f"image_region{j}.png" for j in (1, 2, 3)]
            source = folder / "image.png"
        else:
            written = session.to_comfy(folder / "flow.json", format=kind)
            assert [p.name for p in written] == ["flow.json"] + [f"flow_region{j}.png" for j in (1, 2, 3)]
            source = folder / "flow.json"
        with warnings.catch_warnings():
            warnings.simplefilter("error", ComfyImportWarning)  # nothing of our own files goes unmapped
            back = rw.RegionalSamplerSession.from_comfy(source, MODEL)
        same_session(back, session)
        assert back.comfy_report["messages"] == [] and back.status.startswith("imported node")
        assert torch.equal(run_of(back), expected), kind


def test_exported_graphs_validate_and_agree(tmp_path):
    session = make_session("RegionalSamplerAdvanced", 3)
    (tmp_path / "ui").mkdir()
    session.to_comfy(tmp_path / "image.json")  # one stem: the same mask names in all three
    session.to_comfy(tmp_path / "ui" / "image.json", format="ui")
    session.run()
    session.save_png(tmp_path / "image.png")
    api = json.loads((tmp_path / "image.json").read_text())
    ui = json.loads((tmp_path / "ui" / "image.json").read_text())
    chunks, info = chunks_of(tmp_path / "image.png")
    validate_graph(api)
    validate_graph(chunks["prompt"])
    assert chunks["prompt"] == api and info["Software"] == "regional_widgets"
    # the editor graph holds the same nodes and links, read by the rules independently of the package
    for graph in (ui, chunks["workflow"]):
        by_rules = ui_to_api_by_rules(graph)
        assert {i: n["class_type"] for i, n in by_rules.items()} == {i: n["class_type"] for i, n in api.items()}
        for node_id, node in by_rules.items():
            links = {k: v for k, v in api[node_id]["inputs"].items() if isinstance(v, list)}
            assert node["inputs"] == links, node_id
    assert chunks["workflow"] == ui
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    sampler = next(n for n in ui["nodes"] if n["type"] == "RegionalSamplerAdvanced")
    p = PARAMS["RegionalSamplerAdvanced"]
    # noise_seed is followed by the editor's control value
    assert sampler["widgets_values"] == [p["add_noise"], p["noise_seed"], "fixed", p["steps"], p["start_at_step"],
                                         p["end_at_step"], p["overlap_factor"], p["restore_latent"],
                                         p["return_with_leftover_noise"], p["additional_mode"],
                                         p["additional_sampler"], p["additional_sigma_ratio"]]
    masks = [n for n in nodes.values() if n["type"] == "LoadImageMask"]
    assert [n["widgets_values"][:2] for n in masks] == [[f"image_region{j}.png", "red"] for j in (1, 2, 3)]
    # the PNG shows the result decoded by the model, batch side by side
    with Image.open(tmp_path / "image.png") as image:
        rgb = np.asarray(image.convert("RGB"))
    decoded = (MODEL.decode(session.result).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(rgb, np.concatenate(list(decoded), axis=1))


def test_ui_layout_left_to_right_without_overlaps(tmp_path):
    make_session("RegionalSampler", 3).to_comfy(tmp_path / "ui.json", format="ui")
    ui = json.loads((tmp_path / "ui.json").read_text())
    title = 30  # the editor draws the title bar above pos
    boxes = {n["id"]: (n["pos"][0], n["pos"][1] - title, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in ui["nodes"]}
    ids = sorted(boxes)
    for a in ids:
        assert boxes[a][0] >= 0 and boxes[a][1] >= 0
        for b in ids:
            if a < b:
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a], boxes[b]
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, (a, b)
    for link in ui["links"]:  # every link runs left to right
        assert boxes[link[1]][2] < boxes[link[3]][0], link
    assert ui["last_link_id"] == len(ui["links"]) and ui["last_node_id"] == len(ui["nodes"])


# ---- an editor workflow built by hand from the rules ---------------------------------------------

class UI:
    """Build an editor workflow: nodes with inputs (socket name, type, link), outputs and widget values."""

    def __init__(self):
        self.nodes, self.links = [], []

    def node(self, node_id, kind, widgets=(), outputs=(), title=None, **extra):
        node = {"id": node_id, "type": kind, "pos": [10 * node_id, 0], "size": [300, 100], "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [],
                "outputs": [{"name": o, "type": o, "links": []} for o in outputs],
                "properties": {"Node name for S&R": kind}, "widgets_values": list(widgets), **extra}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def link(self, source, slot, target, name, kind, widget=False):
        link_id = 100 + len(self.links)
        self.links.append([link_id, source, slot, target, len(self.find(target)["inputs"]), kind])
        entry = {"name": name, "type": kind, "link": link_id}
        if widget:
            entry["widget"] = {"name": name}
        self.find(target)["inputs"].append(entry)
        return link_id

    def find(self, node_id):
        return next(n for n in self.nodes if n["id"] == node_id)

    def json(self):
        return {"last_node_id": 99, "last_link_id": 200, "nodes": self.nodes, "links": self.links,
                "groups": [{"title": "regions", "bounding": [0, 0, 500, 500]}], "config": {}, "extra": {},
                "version": 0.4}


def hand_ui():
    """HAND_WRITTEN (test_comfy) as the editor saves it, plus: Reroutes (two in a row) on the CLIP and
    the base sampler, a PrimitiveNode driving the sampler's steps (a converted widget), the sampler's
    noise_seed with its control value, a LoRA loader between the checkpoint and one pipe, a Note."""
    ui = UI()
    ui.node(4, "CheckpointLoaderSimple", ["v1-5-pruned-emaonly.safetensors"], ["MODEL", "CLIP", "VAE"])
    ui.node(40, "LoraLoader", ["x.safetensors", 1.0, 1.0], ["MODEL", "CLIP"], title="my lora")
    ui.link(4, 0, 40, "model", "MODEL")
    ui.link(4, 1, 40, "clip", "CLIP")
    ui.node(70, "Reroute", outputs=["*"])
    ui.node(71, "Reroute", outputs=["*"])
    ui.link(4, 1, 70, "", "*")
    ui.link(70, 0, 71, "", "*")
    for node_id, text in ((6, "sky"), (9, ""), (29, "grass"), (30, "yellow circle")):
        ui.node(node_id, "CLIPTextEncode", [text], ["CONDITIONING"])
        ui.link(71, 0, node_id, "clip", "CLIP")
    for node_id, pos, model in ((8, 6, 4), (27, 29, 4), (28, 30, 40)):
        ui.node(node_id, "ToBasicPipe", outputs=["BASIC_PIPE"])
        ui.link(model, 0, node_id, "model", "MODEL")
        ui.link(4, 1, node_id, "clip", "CLIP")
        ui.link(4, 2, node_id, "vae", "VAE")
        ui.link(pos, 0, node_id, "positive", "CONDITIONING")
        ui.link(9, 0, node_id, "negative", "CONDITIONING")
    for node_id, values, pipe in ((7, [7, "euler_ancestral", "karras", 1], 8), (25, [5.5, "dpmpp_2m", "normal", 1.0], 27),
                                  (26, [9.0, "heun", "simple", 0.98], 28)):
        ui.node(node_id, "KSamplerAdvancedProvider", values, ["KSAMPLER_ADVANCED"])
        ui.link(pipe, 0, node_id, "basic_pipe", "BASIC_PIPE")
    ui.node(23, "LoadImageMask", ["grass.png", "alpha", "image"], ["MASK"])  # + the upload button's value
    ui.node(24, "LoadImageMask", ["sub/sun.png", "green", "image"], ["MASK"])
    ui.node(21, "RegionalPrompt", [0, 0.0, "linear"], ["REGIONAL_PROMPTS"])
    ui.link(23, 0, 21, "mask", "MASK")
    ui.link(25, 0, 21, "advanced_sampler", "KSAMPLER_ADVANCED")
    ui.node(22, "RegionalPrompt", [9, 0.25, "slerp"], ["REGIONAL_PROMPTS"])
    ui.link(24, 0, 22, "mask", "MASK")
    ui.link(26, 0, 22, "advanced_sampler", "KSAMPLER_ADVANCED")
    ui.node(20, "CombineRegionalPrompts", outputs=["REGIONAL_PROMPTS"])
    ui.link(21, 0, 20, "regional_prompts1", "REGIONAL_PROMPTS")
    ui.link(22, 0, 20, "regional_prompts2", "REGIONAL_PROMPTS")
    ui.node(5, "EmptyLatentImage", [64, 64, 1], ["LATENT"])
    ui.node(60, "PrimitiveNode", [12, "fixed"], ["INT"], title="steps")
    ui.node(72, "Reroute", outputs=["*"])
    ui.link(7, 0, 72, "", "*")
    # steps converted to a socket: absent from widgets_values; noise_seed 42 then its control value
    ui.node(3, "RegionalSamplerAdvanced", [True, 42, "randomize", 0, 10000, 10, True, False, "ratio between", "AUTO",
                                           0.3], ["LATENT"], title="Regional (main)")
    ui.link(5, 0, 3, "latent_image", "LATENT")
    ui.link(72, 0, 3, "base_sampler", "KSAMPLER_ADVANCED")
    ui.link(20, 0, 3, "regional_prompts", "REGIONAL_PROMPTS")
    ui.link(60, 0, 3, "steps", "INT", widget=True)
    ui.node(11, "VAEDecode", outputs=["IMAGE"])
    ui.link(3, 0, 11, "samples", "LATENT")
    ui.link(4, 2, 11, "vae", "VAE")
    ui.node(12, "SaveImage", ["regional"])
    ui.link(11, 0, 12, "images", "IMAGE")
    ui.node(80, "Note", ["a note"])
    return ui


def test_hand_built_ui_workflow_imports(hand_written):
    folder, grass, sun = hand_written
    (folder / "ui.json").write_text(json.dumps(hand_ui().json()))
    with pytest.warns(ComfyImportWarning, match=r"node 40 \(LoraLoader, title 'my lora'\) skipped"):
        session = rw.RegionalSamplerSession.from_comfy(folder / "ui.json", MODEL)
    api = rw.RegionalSamplerSession.from_comfy(folder / "flow.json", MODEL)  # the same workflow, API format
    assert session.parameters() == api.parameters() and session.parameters()["steps"] == 12
    assert session.base == api.base
    assert [r.config for r in session.regions] == [r.config for r in api.regions]
    for a, b in zip(session.regions, api.regions):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert (a.variation_seed, a.variation_strength, a.variation_method) == \
            (b.variation_seed, b.variation_strength, b.variation_method)
    report = session.comfy_report
    assert report["title"] == "Regional (main)" and report["node"] == "3" and "editor format" in report["format"]
    assert [s["node"] for s in report["skipped"]] == ["40"]
    assert "40 (LoraLoader" in session.status and "MODEL input goes straight on to node 28" in session.status
    assert "11 (VAEDecode)" in report["ignored"] and "80 (Note)" in report["ignored"]
    assert torch.equal(session.run(), api.run())


def test_ui_widget_rules_old_and_new_editors(hand_written):
    """A converted widget: absent from widgets_values (the rule) or present (newer editors keep every
    value) — both read the same; a RegionalSampler's seed with its control value."""
    folder, *_ = hand_written
    ui = hand_ui()
    sampler = ui.find(3)
    sampler["widgets_values"][2:2] = [3]  # steps kept in place (overridden by the PrimitiveNode's 12)
    (folder / "ui.json").write_text(json.dumps(ui.json()))
    with pytest.warns(ComfyImportWarning):
        assert rw.RegionalSamplerSession.from_comfy(folder / "ui.json", MODEL).steps == 12
    ui = hand_ui()
    sampler = ui.find(3)
    sampler.update(type="RegionalSampler", inputs=[], widgets_values=[7, "increment", 5, "seed+seed_2nd", 8, 2, 0.75,
                                                                       4, False, "DISABLE", "euler", 0.1])
    ui.links = [link for link in ui.links if link[3] != 3]
    ui.link(5, 0, 3, "samples", "LATENT")
    ui.link(7, 0, 3, "base_sampler", "KSAMPLER_ADVANCED")
    ui.link(20, 0, 3, "regional_prompts", "REGIONAL_PROMPTS")
    ui.find(11)["inputs"][0]["link"] = None
    (folder / "ui.json").write_text(json.dumps(ui.json()))
    with pytest.warns(ComfyImportWarning):
        session = rw.RegionalSamplerSession.from_comfy(folder / "ui.json", MODEL)
    assert session.parameters() == dict(seed=7, seed_2nd=5, seed_2nd_mode="seed+seed_2nd", steps=8, base_only_steps=2,
                                        denoise=0.75, overlap_factor=4, restore_latent=False, additional_mode="DISABLE",
                                        additional_sampler="euler", additional_sigma_ratio=0.1)


def test_several_samplers_need_node_id(tmp_path):
    session = make_session("RegionalSampler", 1)
    session.to_comfy(tmp_path / "flow.json")
    graph = json.loads((tmp_path / "flow.json").read_text())
    top = next(i for i, n in graph.items() if n["class_type"] == "RegionalSampler")
    graph["99"] = json.loads(json.dumps(graph[top]))
    graph["99"]["inputs"]["steps"] = 3
    graph["99"]["_meta"] = {"title": "the second pass"}
    (tmp_path / "flow.json").write_text(json.dumps(graph))
    with pytest.raises(ComfyWorkflowError, match=rf"found {top} \(RegionalSampler: 'RegionalSampler'\), 99 "
                                                 r"\(RegionalSampler: 'the second pass'\); choose one with node_id="):
        rw.RegionalSamplerSession.from_comfy(tmp_path / "flow.json", MODEL)
    assert rw.RegionalSamplerSession.from_comfy(tmp_path / "flow.json", MODEL, node_id="99").steps == 3
    assert rw.RegionalSamplerSession.from_comfy(tmp_path / "flow.json", MODEL, node_id=int(top)).steps == 9
    with pytest.raises(ComfyWorkflowError, match="node_id='1': not a .* candidates: .*the second pass"):
        rw.RegionalSamplerSession.from_comfy(tmp_path / "flow.json", MODEL, node_id="1")


def test_bytes_upload_and_missing_masks(tmp_path):
    session = make_session("RegionalSamplerAdvanced", 2)
    session.save_png(tmp_path / "image.png")
    data = (tmp_path / "image.png").read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(ComfyWorkflowError, match=r"LoadImageMask\) input image: mask file .*image_region1.png"):
        rw.RegionalSamplerSession.from_comfy(data, MODEL, mask_folder=elsewhere)
    with pytest.warns(ComfyImportWarning) as record:
        back = rw.RegionalSamplerSession.from_comfy(data, MODEL, mask_folder=elsewhere, missing_masks="empty")
    assert [str(w.message).split("'")[1] for w in record] == ["image_region1.png", "image_region2.png"]
    assert all("not found" in str(w.message) and "starts empty" in str(w.message) for w in record)
    assert [float(r.mask.sum()) for r in back.regions] == [0.0, 0.0] and "starts empty" in back.status
    same = rw.RegionalSamplerSession.from_comfy(data, MODEL, mask_folder=tmp_path)
    same_session(same, session)
    with pytest.raises(ValueError, match="mask_folder"):
        rw.RegionalSamplerSession.from_comfy(data, MODEL)


def test_writers_never_overwrite_foreign_files(tmp_path, unchanged):
    session = make_session("RegionalSamplerAdvanced", 2)
    assert session.save_png(tmp_path / "image.png")  # ours: written again
    assert session.save_png(tmp_path / "image.png")
    assert session.to_comfy(tmp_path / "flow.json", format="ui") and session.to_comfy(tmp_path / "flow.json",
                                                                                       format="ui")
    Image.new("RGB", (8, 8)).save(tmp_path / "alone.png")
    (tmp_path / "foreign_region2.png").write_bytes((tmp_path / "alone.png").read_bytes())
    (tmp_path / "other.json").write_text(json.dumps(hand_ui().json()))  # an editor file not written by us
    with unchanged(tmp_path):
        with pytest.raises(FileSafetyError, match="'alone.png': already exists"):
            session.save_png(tmp_path / "alone.png")
        with pytest.raises(FileSafetyError, match="'foreign_region2.png': already exists"):
            session.save_png(tmp_path / "foreign.png")
        with pytest.raises(FileSafetyError, match="foreign_region2.png"):
            session.to_comfy(tmp_path / "foreign.json", format="ui")
        with pytest.raises(FileSafetyError, match="other.json"):
            session.to_comfy(tmp_path / "other.json", format="ui")
        with pytest.raises(FileSafetyError, match=r"\.png file"):
            session.save_png(tmp_path / "image.jpg")
        with pytest.raises(ValueError, match="format: expected one of 'api', 'ui'"):
            session.to_comfy(tmp_path / "x.json", format="xml")


# ---- hostile files ---------------------------------------------------------------------------------

def png_with_text(**chunks):
    info = PngInfo()
    for name, text in chunks.items():
        info.add_text(name, text)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def raw_chunk(kind, data, crc=None):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) if crc is None
                                                                     else crc)


def with_chunk(png, chunk):
    """``png`` with ``chunk`` inserted right after IHDR (before the pixels, where ComfyUI's text goes)."""
    return png[:33] + chunk + png[33:]


def ui_text(change):
    ui = hand_ui()
    change(ui)
    return json.dumps(ui.json())


def cycle(ui):
    ui.find(70)["inputs"] = [{"name": "", "type": "*", "link": 150}]
    ui.links.append([150, 71, 0, 70, 0, "*"])


def combine(ui):
    """A ConditioningCombine into the base pipe's positive: two CONDITIONING inputs, none to pick."""
    ui.node(41, "ConditioningCombine", [], ["CONDITIONING"])
    ui.link(6, 0, 41, "conditioning_1", "CONDITIONING")
    ui.link(9, 0, 41, "conditioning_2", "CONDITIONING")
    ui.links.append([150, 41, 0, 8, 3, "CONDITIONING"])
    ui.find(8)["inputs"][3]["link"] = 150


HOSTILE = {
    "a prompt chunk that is not JSON": (lambda: png_with_text(prompt="{not json"),
                                        r"text chunk 'prompt' cannot be read as JSON"),
    "a workflow chunk nested 10000 deep": (lambda: png_with_text(workflow="[" * 10000 + "]" * 10000),
                                           r"text chunk 'workflow' .*nested 10000 levels deep, over the limit of 64"),
    "a PNG without workflow chunks": (lambda: png_with_text(parameters="a photo"),
                                      r"a PNG without a ComfyUI workflow \(no 'prompt' or 'workflow'"),
    "a text chunk with a bad CRC": (lambda: with_chunk(png_with_text(), raw_chunk(b"tEXt", b"prompt\x00{}", crc=1)),
                                    r"a damaged PNG"),
    "a zTXt bomb": (lambda: with_chunk(png_with_text(), raw_chunk(b"zTXt", b"prompt\x00\x00" + zlib.compress(
        b" " * (64 * 2**20)))), r"a damaged PNG .*too large"),
    "a truncated PNG": (lambda: png_with_text(prompt="{}")[:40], r"damaged PNG|not a PNG"),
    "a link to a missing node": (lambda: ui_text(lambda ui: ui.links.append([150, 77, 0, 3, 0, "LATENT"]) or
                                                 ui.find(3)["inputs"].__setitem__(0, {"name": "latent_image",
                                                                                      "type": "LATENT",
                                                                                      "link": 150})),
                                 r"node 3 \(RegionalSamplerAdvanced\) input latent_image: link 150 comes from node 77, "
                                 "which is not in the workflow"),
    "an input naming a missing link": (lambda: ui_text(lambda ui: ui.find(6)["inputs"][0].update(link=999)),
                                       r"node 6 \(CLIPTextEncode\) input clip: link 999 is not in the workflow's links"),
    "a cycle through reroutes": (lambda: ui_text(cycle), r"node 6 \(CLIPTextEncode\) input clip: link \d+: Reroute nodes "
                                                         r"form a cycle \(71 -> 70 -> 71\)"),
    "too few widget values": (lambda: ui_text(lambda ui: ui.find(3)["widgets_values"].__delitem__(slice(5, None))),
                              r"node 3 \(RegionalSamplerAdvanced\): widgets_values holds 5 values"),
    "a bad widget value": (lambda: ui_text(lambda ui: ui.find(5)["widgets_values"].__setitem__(0, 7)),
                           r"node 5 \(EmptyLatentImage\) input width"),
    "a duplicated node id": (lambda: ui_text(lambda ui: ui.nodes.append(dict(ui.find(5)))),
                             r"node 5: the id appears twice"),
    "an unknown node that cannot be passed over": (
        lambda: ui_text(combine), r"cannot pass over: 41 \(ConditioningCombine\); it could pass over 40 \(LoraLoader\)"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_files_name_the_problem_and_change_nothing(hand_written, unchanged, case):
    folder, *_ = hand_written
    make, match = HOSTILE[case]
    data = make()
    name = "bad.png" if isinstance(data, bytes) else "bad.json"
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    with unchanged(folder), pytest.raises(ComfyWorkflowError, match=match):
        rw.RegionalSamplerSession.from_comfy(folder / name, MODEL)


def test_huge_png_and_json_are_refused_before_parsing(tmp_path, unchanged):
    from regional_widgets.io import comfy_png

    (tmp_path / "huge.png").write_bytes(png_with_text())
    with open(tmp_path / "huge.png", "ab") as file:
        file.truncate(comfy_png.MAX_PNG_BYTES + 1)
    with unchanged(tmp_path), pytest.raises(ComfyWorkflowError, match=r"huge.png.* over the limit of 134217728"):
        rw.RegionalSamplerSession.from_comfy(tmp_path / "huge.png", MODEL)
    with pytest.raises(ComfyWorkflowError, match=r"upload: \d+ bytes, over the limit of 33554432"):
        rw.RegionalSamplerSession.from_comfy(b"{" + b" " * 2**25, MODEL, mask_folder=tmp_path)


def test_flow_nodes_travel_through_ui_and_png(tmp_path):
    """Issue 13B's flow nodes (ModelSamplingSD3, EmptySD3LatentImage) go through the editor format and
    the PNG as through the API format: the UI mapping is the API schemas', not a second table."""
    flow = rw.models.ToyWorld("sd3", n_exemplars=60, image_size=64, prediction="flow")
    shifted = rw.models.ToyWorld("sd3", n_exemplars=60, image_size=64, prediction="flow", shift=2.0)
    mask = np.zeros((64, 64), np.float32)
    mask[:, 30:] = 1
    session = rw.RegionalSamplerSession(shifted, rw.empty_latent(shifted, 64, 64), steps=5,
                                        base=rw.SamplerConfig(positive="sky"),
                                        regions=[rw.Region(mask, rw.SamplerConfig(positive="grass"))])
    expected = session.run().clone()
    session.to_comfy(tmp_path / "ui.json", format="ui")
    session.save_png(tmp_path / "image.png")
    kinds = {n["type"] for n in json.loads((tmp_path / "ui.json").read_text())["nodes"]}
    assert {"ModelSamplingSD3", "EmptySD3LatentImage"} <= kinds
    for source in ("ui.json", "image.png"):
        back = rw.RegionalSamplerSession.from_comfy(tmp_path / source, flow)
        assert back.model.model_sampling.shift == 2.0
        assert torch.equal(back.run(), expected), source


def test_a_chain_of_unknown_nodes_is_passed_over_and_each_reported(hand_written):
    """Two LoRA loaders in a row on the base pipe and a CLIPSetLastLayer before a text encoder."""
    folder, *_ = hand_written
    graph = json.loads(HAND_WRITTEN)
    graph["40"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "a"}}
    graph["41"] = {"class_type": "LoraLoader", "inputs": {"model": ["40", 0], "clip": ["40", 1], "lora_name": "b"},
                   "_meta": {"title": "detail lora"}}
    graph["42"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["41", 1], "stop_at_clip_layer": -2}}
    graph["8"]["inputs"]["model"] = ["41", 0]
    graph["6"]["inputs"]["clip"] = ["42", 0]
    (folder / "lora.json").write_text(json.dumps(graph))
    with pytest.warns(ComfyImportWarning) as record:
        session = rw.RegionalSamplerSession.from_comfy(folder / "lora.json", MODEL)
    assert sorted(str(w.message).split(" (")[0] for w in record) == ["node 40", "node 41", "node 42"]
    assert [s["node"] for s in session.comfy_report["skipped"]] == ["40", "41", "42"]
    assert session.comfy_report["skipped"][1]["title"] == "detail lora"
    plain = rw.RegionalSamplerSession.from_comfy(folder / "flow.json", MODEL)
    assert session.parameters() == plain.parameters() and session.base == plain.base


def test_a_text_chunk_over_the_limit_is_refused(tmp_path, unchanged, monkeypatch):
    from regional_widgets.io import comfy_png

    monkeypatch.setattr(comfy_png, "MAX_CHUNK_CHARS", 1000)  # the real limit (32 MiB of text) scaled down
    (tmp_path / "long.png").write_bytes(png_with_text(workflow=json.dumps({"nodes": [], "links": [], "x": "a" * 2000})))
    with unchanged(tmp_path), pytest.raises(ComfyWorkflowError, match=r"long.png: text chunk 'workflow' holds 20\d\d "
                                                                      r"characters, over the limit of 1000"):
        rw.RegionalSamplerSession.from_comfy(tmp_path / "long.png", MODEL)


def test_hand_built_ui_with_the_flow_nodes(hand_written):
    """ModelSamplingSD3 ([shift]) between the checkpoint and every pipe (through a Reroute), and
    EmptySD3LatentImage ([width, height, batch_size]), by the widget rule; the same as its API form."""
    folder, *_ = hand_written
    flow = rw.models.ToyWorld("sd3", n_exemplars=60, image_size=64, prediction="flow")
    ui = hand_ui()
    ui.node(50, "ModelSamplingSD3", [2.5], ["MODEL"])
    ui.link(4, 0, 50, "model", "MODEL")
    ui.node(73, "Reroute", outputs=["*"])
    ui.link(50, 0, 73, "", "*")
    model_links = {e["link"] for n in ui.nodes if n["type"] in ("ToBasicPipe", "LoraLoader")
                   for e in n["inputs"] if e["name"] == "model"}
    for link in ui.links:
        if link[0] in model_links:
            link[1] = 73
    latent = ui.find(5)
    latent["type"], latent["widgets_values"] = "EmptySD3LatentImage", [64, 64, 1]
    (folder / "ui.json").write_text(json.dumps(ui.json()))
    session = rw.RegionalSamplerSession.from_comfy(folder / "ui.json", flow)
    assert session.comfy_report["skipped"] == []  # every pipe's model now comes through the Reroute
    graph = json.loads(HAND_WRITTEN)
    graph["50"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["4", 0], "shift": 2.5}}
    for pipe in ("8", "27", "28"):
        graph[pipe]["inputs"]["model"] = ["50", 0]
    graph["5"]["class_type"] = "EmptySD3LatentImage"
    (folder / "api.json").write_text(json.dumps(graph))
    api = rw.RegionalSamplerSession.from_comfy(folder / "api.json", flow)
    assert session.model.model_sampling.shift == 2.5 == api.model.model_sampling.shift
    assert session.latent_image.shape == (1, 16, 8, 8)
    assert session.parameters() == api.parameters() and session.base == api.base
    assert torch.equal(session.run(), api.run())


def test_a_bypassed_node_is_passed_over_and_reported(hand_written):
    """The editor's bypass (mode 4) on a node we know: its MODEL input goes on, as in the editor."""
    folder, *_ = hand_written
    flow = rw.models.ToyWorld("sd3", n_exemplars=60, image_size=64, prediction="flow")
    ui = hand_ui()
    ui.node(50, "ModelSamplingSD3", [2.5], ["MODEL"], mode=4)
    ui.link(4, 0, 50, "model", "MODEL")
    ui.find(8)["inputs"][0]["link"] = ui.link(50, 0, 12, "unused", "MODEL")
    ui.find(12)["inputs"].pop()
    ui.find(5)["type"] = "EmptySD3LatentImage"
    (folder / "ui.json").write_text(json.dumps(ui.json()))
    with pytest.warns(ComfyImportWarning) as record:
        session = rw.RegionalSamplerSession.from_comfy(folder / "ui.json", flow)
    assert sorted(s["class_type"] for s in session.comfy_report["skipped"]) == ["LoraLoader",
                                                                               "ModelSamplingSD3 (bypassed)"]
    assert any("node 50 (ModelSamplingSD3 (bypassed)" in str(w.message) for w in record)
    assert session.model.model_sampling.shift == flow.model_sampling.shift  # the checkpoint's own, as the editor runs


@pytest.mark.parametrize("when", ["mid-run", "done", "leftover noise"])
def test_the_png_of_a_flow_session_shows_what_the_screen_shows(tmp_path, when):
    """On a flow model a held latent is ``x / (1 - sigma)``: the PNG decodes what `plot.picture` shows
    (the CLI's and the inspector's picture), not the raw latent, which is far noisier."""
    flow = rw.models.ToyWorld(n_exemplars=60, image_size=32, prediction="flow")
    mask = np.zeros((32, 32), np.float32)
    mask[16:] = 1
    params = {"end_at_step": 3, "return_with_leftover_noise": True} if when == "leftover noise" else {}
    session = rw.RegionalSamplerSession(flow, rw.empty_latent(flow, 32, 32), base=rw.SamplerConfig(positive="sky"),
                                        regions=[rw.Region(mask, rw.SamplerConfig("euler", positive="grass"))],
                                        steps=6, **params)
    if when == "mid-run":
        for _ in range(3):
            session.step()
    else:
        session.run()
    which = "latent" if when == "mid-run" else "result"
    raw = session.result if which == "result" else session.latent
    assert not torch.equal(rw.plot.picture(session, which), raw)  # a case where the two differ
    session.save_png(tmp_path / "image.png")
    shown = np.asarray(Image.open(tmp_path / "image.png").convert("RGB"))
    expected = flow.decode(rw.plot.picture(session, which)).clamp(0, 1).numpy()[0]
    assert np.array_equal(shown, (expected.astype(np.float64) * 255).round().astype(np.uint8))


def test_the_png_of_an_eps_session_is_its_result_decoded(tmp_path):
    session = make_session("RegionalSamplerAdvanced", 1, batch=1)
    session.run()
    session.save_png(tmp_path / "image.png")
    shown = np.asarray(Image.open(tmp_path / "image.png").convert("RGB"))
    expected = MODEL.decode(session.result).clamp(0, 1).numpy()[0]
    assert np.array_equal(shown, (expected.astype(np.float64) * 255).round().astype(np.uint8))
