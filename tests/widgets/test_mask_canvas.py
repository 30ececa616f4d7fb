"""MaskCanvas driven as the browser drives it: front-end messages in, session masks and draw commands out.

Expected pixel sets are computed here independently (plain Python loops over pixel centres) from
the rules documented in `regional_widgets.widgets.painter`.
"""
import io
import json
import math

import numpy as np
import pytest
import torch
from ipycanvas import canvas as ipycanvas_canvas
from PIL import Image

import regional_widgets as rw
from regional_widgets.sampling import masks as mask_ops
from regional_widgets.widgets import REGION_COLORS, MaskCanvas, region_color, region_hex

MODEL = rw.models.ToyWorld(n_exemplars=60, image_size=64)
N = 64  # image side; the default display scale is 8


@pytest.fixture
def session():
    return rw.RegionalSamplerSession(
        MODEL, rw.empty_latent(MODEL, N, N), base=rw.SamplerConfig(positive="sky"),
        regions=[rw.Region(np.zeros((N, N), np.float32), rw.SamplerConfig(positive="grass")),
                 rw.Region(np.zeros((N, N), np.float32), rw.SamplerConfig(positive="brick"))],
        steps=4)


@pytest.fixture
def sent(monkeypatch):
    """Every message the canvas manager sends, as a list of decoded [(command name, args)] batches."""
    recorder = _Recorder([])
    monkeypatch.setattr(ipycanvas_canvas._CANVAS_MANAGER, "send", recorder)
    return recorder.messages


class _Recorder:
    """Stands in for _CANVAS_MANAGER.send: decodes each batch and keeps the putImageData payloads."""

    def __init__(self, messages):
        self.messages = messages
        self.images = []

    def __call__(self, content, buffers=None):
        commands = json.loads(bytes(buffers[0]))
        if commands and isinstance(commands[0], int):
            commands = [commands]  # a single, unbatched command
        batch, k = [], 1
        for command in commands:
            name, count = ipycanvas_canvas._CMD_LIST[command[0]], command[2] if len(command) > 2 else 0
            if name == "putImageData":
                self.images.extend(bytes(b) for b in buffers[k:k + count])
            batch.append((name, command[1]))
            k += count
        self.messages.append(batch)


def event(canvas, name, x=0.0, y=0.0, **extra):
    content = {"event": name, "x": x, "y": y, **extra}
    canvas.multicanvas._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


def key(canvas, k, shift=False, ctrl=False):
    content = {"event": "key_down", "key": k, "shift_key": shift, "ctrl_key": ctrl, "meta_key": False}
    canvas.multicanvas._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


def drag(canvas, points, scale=8):
    """Press, move through, release at image points (sent in display coordinates)."""
    (x, y), rest = points[0], points[1:]
    event(canvas, "mouse_down", x * scale, y * scale)
    for x, y in rest:
        event(canvas, "mouse_move", x * scale, y * scale)
    event(canvas, "mouse_up", x * scale, y * scale)


def click(canvas, x, y, scale=8):
    drag(canvas, [(x, y)], scale)


def expected_stroke(points, radius, shape=(N, N)):
    """Pixels whose centre is within radius of the polyline, by brute force."""
    out = np.zeros(shape, np.float32)
    segments = list(zip(points, points[1:])) or [(points[0], points[0])]
    for i in range(shape[0]):
        for j in range(shape[1]):
            px, py = j + 0.5, i + 0.5
            for (ax, ay), (bx, by) in segments:
                dx, dy = bx - ax, by - ay
                length2 = dx * dx + dy * dy
                t = 0.0 if length2 == 0 else min(max(((px - ax) * dx + (py - ay) * dy) / length2, 0.0), 1.0)
                if (px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2 <= radius * radius + 1e-9:
                    out[i, j] = 1
                    break
    return out


def names(message):
    return [name for name, _ in message]


# ---- construction ----------------------------------------------------------------------------------

def test_layers_scale_and_css_class(session):
    canvas = MaskCanvas(session)
    mc = canvas.multicanvas
    assert len(mc._canvases) == 3 and (mc.width, mc.height) == (512, 512) and canvas.scale == 8
    assert "rw-mask-canvas" in mc._dom_classes
    assert canvas.active_region == 1 and canvas.tool == "brush"
    assert [b.style.button_color for b in canvas.region_buttons] == [region_hex(1), region_hex(2)]
    assert MaskCanvas(session, scale=3).multicanvas.width == 192
    assert MaskCanvas(session, max_display=200).scale == 3


def test_session_without_regions_and_close():
    s = rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, N, N), steps=2)
    canvas = MaskCanvas(s)
    assert canvas.image_shape == (N, N) and canvas.region_buttons == []
    drag(canvas, [(10, 10), (20, 20)])  # nothing to paint: ignored
    s.regions = [rw.Region(np.zeros((N, N), np.float32))]
    drag(canvas, [(10, 10)])
    assert s.regions[0].mask.any()
    canvas.close()
    s.regions = []  # no longer observed: nothing breaks
    assert len(canvas.painter.masks) == 1


def test_palette():
    assert len(REGION_COLORS) == 9 and len(set(REGION_COLORS)) == 9
    assert region_color(1) == REGION_COLORS[0] and region_color(10) == REGION_COLORS[0]
    assert region_hex(1) == "#%02x%02x%02x" % REGION_COLORS[0]


def test_large_image_gets_fractional_scale():
    m = np.zeros((1024, 768), np.float32)
    s = rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 1024, 768), regions=[rw.Region(m)], steps=2)
    canvas = MaskCanvas(s)
    assert canvas.scale == 0.5 and (canvas.multicanvas.width, canvas.multicanvas.height) == (384, 512)
    canvas.brush_size = 10
    drag(canvas, [(100, 100)], scale=0.5)
    assert s.regions[0].mask[100, 100] == 1 and s.regions[0].mask.sum() == expected_stroke(
        [(100.0, 100.0)], 5, (1024, 768)).sum()


# ---- brush and eraser ----------------------------------------------------------------------------------

def test_drag_paints_exactly_the_stroke_in_the_active_region(session):
    canvas = MaskCanvas(session)
    canvas.brush_size = 5
    old = session.regions[0].mask
    points = [(10.25, 10.5), (20.0, 12.75), (30.5, 29.0)]
    drag(canvas, points)
    np.testing.assert_array_equal(session.regions[0].mask, expected_stroke(points, 2.5))
    assert session.regions[0].mask is not old and session.regions[0].mask.dtype == np.float32
    assert not session.regions[1].mask.any()


def test_one_pixel_brush_and_fast_drag_leave_no_gaps(session):
    canvas = MaskCanvas(session)
    canvas.brush_size = 1
    drag(canvas, [(2.1, 3.9), (60.7, 40.2)])  # one move across the image
    mask = session.regions[0].mask
    np.testing.assert_array_equal(mask, expected_stroke([(2.1, 3.9), (60.7, 40.2)], math.sqrt(2) / 2))
    for j in range(2, 61):
        assert mask[:, j].any(), f"gap at column {j}"


def test_eraser(session):
    canvas = MaskCanvas(session)
    canvas.tool = "rectangle"
    drag(canvas, [(0, 0), (63.9, 63.9)])
    canvas.tool, canvas.brush_size = "eraser", 6
    drag(canvas, [(5.5, 30.5), (50.5, 30.5)])
    np.testing.assert_array_equal(session.regions[0].mask, 1 - expected_stroke([(5.5, 30.5), (50.5, 30.5)], 3))


def test_mouse_out_ends_the_drag(session):
    canvas = MaskCanvas(session)
    event(canvas, "mouse_down", 80, 80)
    event(canvas, "mouse_move", 160, 80)
    event(canvas, "mouse_out", 170, 80)
    assert session.regions[0].mask.any() and not canvas.painter.drawing
    event(canvas, "mouse_move", 300, 300)
    assert not session.regions[0].mask[37, 37]


# ---- shapes and fill -------------------------------------------------------------------------------------

def test_rectangle_covers_the_pixels_between_press_and_release(session):
    canvas = MaskCanvas(session)
    canvas.tool = "rectangle"
    drag(canvas, [(10.9, 8.1), (5.0, 6.0), (2.3, 3.7)])
    mask = session.regions[0].mask
    assert mask.sum() == 6 * 9  # rows 3..8, columns 2..10
    assert mask[3:9, 2:11].all()


def test_ellipse_is_inscribed_in_the_pixel_box(session):
    canvas = MaskCanvas(session)
    canvas.tool = "ellipse"
    drag(canvas, [(10.2, 20.6), (40.9, 35.3)])  # pixel box: columns 10..40, rows 20..35
    cx, cy, rx, ry = (10 + 41) / 2, (20 + 36) / 2, 31 / 2, 16 / 2
    expected = sum(((j + 0.5 - cx) / rx) ** 2 + ((i + 0.5 - cy) / ry) ** 2 <= 1 for i in range(N) for j in range(N))
    assert session.regions[0].mask.sum() == expected and session.regions[0].mask[28, 25] == 1


def test_polygon_by_clicks_and_by_lasso(session):
    canvas = MaskCanvas(session)
    canvas.tool = "polygon"
    tri = [(5.2, 5.3), (40.1, 8.7), (12.6, 50.2)]

    def inside(px, py):
        signs = []
        for (ax, ay), (bx, by) in zip(tri, tri[1:] + tri[:1]):
            signs.append((bx - ax) * (py - ay) - (by - ay) * (px - ax) > 0)
        return all(signs) or not any(signs)
    expected = np.array([[inside(j + 0.5, i + 0.5) for j in range(N)] for i in range(N)], np.float32)
    for x, y in tri:
        click(canvas, x, y)
        assert not session.regions[0].mask.any()  # open until closed
    click(canvas, 5.5, 5.5)  # near the first vertex: closes
    np.testing.assert_array_equal(session.regions[0].mask, expected)
    canvas.active_region = 2
    drag(canvas, tri + [tri[0]])  # the same triangle as a lasso
    np.testing.assert_array_equal(session.regions[1].mask, expected)
    for x, y in tri:  # Enter closes a clicked polygon too
        click(canvas, x + 10, y + 5)
    key(canvas, "Enter")
    assert session.regions[1].mask.sum() > expected.sum()


def test_flood_fill_fills_the_4_connected_equal_values(session):
    ring = np.zeros((N, N), np.float32)
    ring[10:30, 10:30] = 1
    ring[12:28, 12:28] = 0
    ring[40, 41] = ring[41, 40] = ring[41, 42] = ring[42, 41] = 1  # (41, 41) is open only diagonally
    session.regions[0].mask = ring
    canvas = MaskCanvas(session)
    canvas.tool = "fill"
    click(canvas, 20.5, 20.5)
    assert session.regions[0].mask.sum() == ring.sum() + 16 * 16
    click(canvas, 20.5, 20.5)  # already 1: nothing to fill
    assert session.regions[0].mask.sum() == ring.sum() + 256
    click(canvas, 60.5, 1.5)  # outside: every other 0 but the diagonally open pixel (4-connectivity)
    assert session.regions[0].mask.sum() == N * N - 1 and session.regions[0].mask[41, 41] == 0


def test_soft_values_fill_only_equal_values(session):
    soft = np.full((N, N), 0.5, np.float32)
    soft[:, 32:] = 0.25
    session.regions[0].mask = soft
    canvas = MaskCanvas(session)
    canvas.tool = "fill"
    click(canvas, 3, 3)
    assert (session.regions[0].mask[:, :32] == 1).all() and (session.regions[0].mask[:, 32:] == 0.25).all()


# ---- clear, invert, undo --------------------------------------------------------------------------------

def test_clear_and_invert_buttons(session):
    canvas = MaskCanvas(session)
    canvas.tool = "rectangle"
    drag(canvas, [(0, 0), (9.5, 9.5)])
    canvas.toolbar.invert_button.click()
    assert session.regions[0].mask.sum() == N * N - 100 and session.regions[0].mask[0, 0] == 0
    canvas.toolbar.clear_button.click()
    assert not session.regions[0].mask.any()
    canvas.toolbar.undo_button.click()
    assert session.regions[0].mask.sum() == N * N - 100


def test_undo_redo_restore_exact_arrays(session):
    canvas = MaskCanvas(session)
    states = [[r.mask.copy() for r in session.regions]]
    drag(canvas, [(10, 10), (30, 20)])
    states.append([r.mask.copy() for r in session.regions])
    canvas.active_region = 2
    canvas.tool = "ellipse"
    drag(canvas, [(20, 5), (50, 40)])
    states.append([r.mask.copy() for r in session.regions])
    canvas.active_region, canvas.tool = 1, "eraser"
    drag(canvas, [(5, 15), (60, 15)])
    states.append([r.mask.copy() for r in session.regions])

    def check(k):
        for mask, want in zip(session.regions, states[k]):
            np.testing.assert_array_equal(mask.mask, want)
    for k in (2, 1, 0):
        canvas.undo()
        check(k)
    assert canvas.undo() is None and canvas.toolbar.undo_button.disabled
    for k in (1, 2, 3):
        canvas.redo()
        check(k)
    diff = canvas.painter._undo[-1]
    assert diff.before.size < N * N  # only the changed box is kept


def test_undo_history_keeps_only_changed_boxes(session):
    canvas = MaskCanvas(session)
    canvas.brush_size = 3
    drag(canvas, [(10.5, 10.5), (12.5, 10.5)])
    diff = canvas.painter._undo[-1]
    assert (diff.y0, diff.x0, diff.before.shape) == (9, 9, (3, 5))


# ---- keyboard --------------------------------------------------------------------------------------------

def test_keyboard_shortcuts(session):
    canvas = MaskCanvas(session)
    key(canvas, "2")
    assert canvas.active_region == 2
    key(canvas, "3")  # no region 3
    assert canvas.active_region == 2
    for k, tool in (("e", "eraser"), ("R", "rectangle"), ("o", "ellipse"), ("p", "polygon"), ("f", "fill"),
                    ("b", "brush")):
        key(canvas, k)
        assert canvas.tool == tool
    canvas.brush_size = 10
    key(canvas, "]")
    assert canvas.brush_size == 12
    key(canvas, "[")
    key(canvas, "[")
    assert canvas.brush_size == 7
    drag(canvas, [(30, 30)])
    painted = session.regions[1].mask.copy()
    assert painted.any() and not session.regions[0].mask.any()
    key(canvas, "z", ctrl=True)
    assert not session.regions[1].mask.any()
    key(canvas, "Z", shift=True, ctrl=True)
    np.testing.assert_array_equal(session.regions[1].mask, painted)
    key(canvas, "z", ctrl=True)
    key(canvas, "y", ctrl=True)
    np.testing.assert_array_equal(session.regions[1].mask, painted)
    key(canvas, "1")
    assert canvas.active_region == 1 and canvas.toolbar.size_slider.value == 7


# ---- import and export -----------------------------------------------------------------------------------

def test_mask_png_round_trip_is_8_bit(session, tmp_path):
    canvas = MaskCanvas(session)
    soft = np.random.default_rng(0).random((N, N)).astype(np.float32)
    soft[:8] = 1
    soft[8:16] = 0
    canvas.load_mask(1, soft)
    np.testing.assert_array_equal(session.regions[0].mask, soft)
    png = canvas.mask_png(1)
    image = Image.open(io.BytesIO(png))
    assert image.mode == "L" and image.size == (N, N)
    canvas.load_mask(2, png)
    np.testing.assert_array_equal(session.regions[1].mask, np.round(soft * 255).astype(np.float32) / 255)
    assert np.abs(session.regions[1].mask - soft).max() <= 1 / 510 + 1e-7
    (tmp_path / "m.png").write_bytes(png)
    canvas.load_mask(2, str(tmp_path / "m.png"))
    np.testing.assert_array_equal(session.regions[1].mask[:16], soft[:16])  # 0 and 1 are exact
    canvas.undo()
    canvas.undo()
    assert not session.regions[1].mask.any()


def test_load_mask_alpha_and_resize(session):
    canvas = MaskCanvas(session)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 200  # colour is ignored when there is transparency
    rgba[:16, :, 3] = 255
    canvas.load_mask(1, Image.fromarray(rgba, "RGBA"))
    small = np.zeros((32, 32), np.float32)
    small[:16] = 1
    want = mask_ops.resize(torch.from_numpy(small), N, N).numpy()
    np.testing.assert_allclose(session.regions[0].mask, want, atol=1e-6)
    with pytest.raises(ValueError):
        canvas.load_mask(1, np.full((N, N), 2.0))


def test_load_background_and_latent_redraw(session, sent):
    canvas = MaskCanvas(session)
    sent.clear()
    canvas.load_background(np.ones((32, 32, 3)))
    assert (canvas.background_rgb() == 255).all() and canvas.background_rgb().shape == (N, N, 3)
    assert "putImageData" in names(sent[-1])
    sent.clear()
    session.step()  # a user background stays
    assert not any("putImageData" in names(m) for m in sent)
    canvas.load_background(None)
    canvas.follow_latent = False
    sent.clear()
    session.step()
    assert not any("putImageData" in names(m) for m in sent)
    canvas.follow_latent = True
    sent.clear()
    session.step()
    assert any("putImageData" in names(m) for m in sent)
    decoded = (MODEL.decode(session.latent)[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(canvas.background_rgb(), decoded)


# ---- session binding ----------------------------------------------------------------------------------

def test_painting_forks_the_session(session):
    canvas = MaskCanvas(session)
    session.step()
    session.step()
    session.goto(1)
    kept = len(session.history)
    seen = []
    session.observe(lambda change: seen.append(change["name"]), names=["masks"])
    session.regions[0].observe(lambda change: seen.append("region mask"), names=["mask"])
    drag(canvas, [(10, 10), (20, 20)])
    assert seen.count("region mask") == 1 and "masks" in seen  # one write per stroke, on release
    assert len(session.history) < kept  # the steps computed with the old mask are forgotten
    assert session.regions[0].mask.any()


def test_no_session_write_during_a_drag(session):
    canvas = MaskCanvas(session)
    writes = []
    session.regions[0].observe(lambda change: writes.append(1), names=["mask"])
    event(canvas, "mouse_down", 80, 80)
    for x in range(88, 300, 8):
        event(canvas, "mouse_move", x, 80)
    assert not writes and canvas.painter.mask(1).any()
    event(canvas, "mouse_up", 300, 80)
    assert writes == [1]


def test_external_changes_are_shown(session):
    canvas = MaskCanvas(session)
    drag(canvas, [(10, 10)])
    new = np.zeros((N, N), np.float32)
    new[:5] = 1
    session.regions[0].mask = new
    np.testing.assert_array_equal(canvas.painter.mask(1), new)
    assert not canvas.painter.can_undo  # that region's history no longer applies
    session.regions = session.regions + [rw.Region(np.zeros((N, N), np.float32), rw.SamplerConfig(positive="sky"))]
    assert len(canvas.region_buttons) == 3 and len(canvas.painter.masks) == 3
    key(canvas, "3")
    drag(canvas, [(40, 40)])
    assert session.regions[2].mask.any()
    session.regions = session.regions[:1]
    assert canvas.active_region == 1 and len(canvas.region_buttons) == 1


def test_resized_masks_resize_the_canvas(session):
    canvas = MaskCanvas(session)
    with session.hold_trait_notifications():  # a mask has the image size the latent implies: both change
        session.latent_image = rw.empty_latent(MODEL, 32, 48)
        session.regions = [rw.Region(np.zeros((32, 48), np.float32))]
    assert canvas.image_shape == (32, 48) and canvas.scale == 10
    assert (canvas.multicanvas.width, canvas.multicanvas.height) == (480, 320)


# ---- what is drawn ---------------------------------------------------------------------------------------

def test_drag_draws_incrementally_and_release_redraws(session, sent):
    canvas = MaskCanvas(session)
    sent.clear()
    event(canvas, "mouse_down", 80, 80)
    event(canvas, "mouse_move", 120, 80)
    event(canvas, "mouse_up", 120, 80)
    assert len(sent) == 3  # one batch per event (hold_canvas)
    move = names(sent[1])
    assert "clearRect" in move and move.count("putImageData") == 1 and "setLineDash" not in move
    assert "setLineDash" in names(sent[2]) and "strokeLineSegments" in names(sent[2])


def test_images_are_sent_as_png(session, monkeypatch):
    recorder = _Recorder([])
    monkeypatch.setattr(ipycanvas_canvas._CANVAS_MANAGER, "send", recorder)
    canvas = MaskCanvas(session)
    drag(canvas, [(10, 10), (20, 20)])
    assert recorder.images and all(b.startswith(b"\x89PNG") for b in recorder.images)


def test_grown_outline_follows_overlap_factor(session, sent):
    canvas = MaskCanvas(session)
    canvas.tool = "rectangle"
    drag(canvas, [(20, 10), (29, 19)])  # rows 10..19, columns 20..29
    k = session.overlap_factor  # 10: grows by k-1-p = 4 up/left and p = 5 down/right
    p = math.ceil((k - 1) / 2)
    want = np.zeros((N, N), bool)
    want[10 - (k - 1 - p):20 + p, 20 - (k - 1 - p):30 + p] = True
    np.testing.assert_array_equal(canvas.grown_mask(1), want)
    segments = canvas.grown_outline(1)
    assert len(segments) == 4
    assert {tuple(map(tuple, s)) for s in segments} >= {((16.0, 6.0), (35.0, 6.0)), ((16.0, 6.0), (16.0, 25.0))}
    last = sent[-1]
    dash = [args for name, args in last if name == "setLineDash"]
    assert dash and dash[0][0] and "strokeLineSegments" in names(last)
    sent.clear()
    session.overlap_factor = 3
    assert "strokeLineSegments" in names(sent[-1])
    assert canvas.grown_mask(1).sum() == (10 + 2) * (10 + 2)
    sent.clear()
    canvas.show_grown = False
    assert "strokeLineSegments" not in names(sent[-1])


def test_client_ready_redraws_every_layer(session, sent):
    canvas = MaskCanvas(session)
    sent.clear()
    event(canvas, "client_ready")
    assert len(sent) == 1 and names(sent[0]).count("putImageData") == 2  # background and overlay
    assert names(sent[0]).count("switchCanvas") >= 3


def test_exceptions_do_not_leave_the_canvas_held(session):
    canvas = MaskCanvas(session)
    canvas.painter.tool = "nonsense"
    with pytest.raises(ValueError):
        canvas._on_down(8, 8)  # called directly: ipywidgets' dispatcher would log and swallow it
    assert not ipycanvas_canvas._CANVAS_MANAGER._caching
