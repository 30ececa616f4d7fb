"""End to end in a real browser: upload a ComfyUI PNG through the app's Open button in JupyterLab.

The test saves a session as a ComfyUI image (``session.save_png``: the workflow in its ``prompt``
and ``workflow`` chunks, the masks beside it) into the notebook's folder, opens the app, clicks
the FileUpload's button and hands the PNG to the file chooser it opens (its ``<input type=file>``), and
checks *in the kernel* that the app now shows a session with exactly the saved settings and masks.
"""

from __future__ import annotations

import numpy as np

import regional_widgets as rw

NOTEBOOK_CELLS = [
    "import regional_widgets as rw\n"
    "app = rw.RegionalSamplerApp.from_model(rw.models.ToyWorld())\n"
    "first = app.session\n"
    "app",
]
OPEN_BUTTON = ".rw-open-menu button.widget-upload"


def saved_session():
    model = rw.models.ToyWorld()
    mask = np.zeros((64, 64), np.float32)
    mask[8:40, 20:60] = 1
    soft = (np.arange(64 * 64).reshape(64, 64) % 256 / 255).astype(np.float32)
    base = rw.SamplerConfig("heun", "exponential", 3.5, "night", "sun", 0.9)
    regions = [rw.Region(mask, rw.SamplerConfig("euler", "karras", 2.5, "grass")),
               rw.Region(soft, rw.SamplerConfig("dpmpp_2m", "karras", 4.0, "brick"), variation_seed=7,
                         variation_strength=0.5, variation_method="slerp")]
    return rw.RegionalSamplerSession(model, rw.empty_latent(model, 64, 64), base=base, regions=regions, steps=9,
                                     noise_seed=1234, overlap_factor=4)


def test_upload_a_comfy_png_in_jupyterlab(lab):
    session = saved_session()
    written = session.save_png(lab.server.root_dir / "scene.png")  # the masks land beside the notebook
    assert [p.name for p in written] == ["scene.png", "scene_region1.png", "scene_region2.png"]
    name = lab.server.write_notebook("upload.ipynb", NOTEBOOK_CELLS)
    lab.open(name)
    lab.run_all()
    assert lab.eval("app.session is first") is True

    button = lab.page.locator(OPEN_BUTTON)
    button.wait_for(state="visible")
    assert button.count() == 1
    # the button clicks its own (detached) <input type=file>: the page's file chooser opens, and the file
    # is set on that input, as choosing it in the dialog does
    with lab.page.expect_file_chooser() as chooser:
        button.click()
    assert not chooser.value.is_multiple()
    chooser.value.set_files(str(written[0]))
    state = lab.eval_until(
        "dict(new=app.session is not first, params=app.session.parameters(), base=app.session.base.to_dict(),"
        " regions=[dict(config=r.config.to_dict(), seed=r.variation_seed, strength=r.variation_strength,"
        " method=r.variation_method, mask=r.mask.tolist()) for r in app.session.regions],"
        " message=app.open_menu.message.value, canvas=app.canvas.session is app.session)",
        lambda v: v["new"] or "could not" in v["message"], timeout=60)
    assert state["new"] and state["canvas"], state["message"]
    assert "opened node" in state["message"] and "not mapped" not in state["message"]
    assert state["params"] == session.parameters() and state["base"] == session.base.to_dict()
    for got, want in zip(state["regions"], session.regions):
        assert got["config"] == want.config.to_dict()
        assert (got["seed"], got["strength"], got["method"]) == (want.variation_seed, want.variation_strength,
                                                                 want.variation_method)
        np.testing.assert_array_equal(np.asarray(got["mask"], np.float32), want.mask)
    # the page shows the new session: its Step button steps it
    lab.eval("app.session.step()")
    assert lab.eval("app.session.step_index") == 1
