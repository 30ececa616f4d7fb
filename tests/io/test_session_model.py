"""A saved session names its model (session.json's ``"model"``: the model's spec) and loads only onto
that model unless asked; the record is checked like the rest of the file, and files without it load
as before. Every refusal is checked for its type, its message and an unchanged folder."""
import json
import warnings

import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets.io.session_files import SessionFileError, read_model_spec
from regional_widgets.models.spec import build_named_model, describe_spec, spec_difference
from regional_widgets.persistence import named_model

N = 16
SPREAD = rw.models.ToyWorld(n_exemplars=20, image_size=16, mixture_variance=0.01)
POINTS = rw.models.ToyWorld(n_exemplars=20, image_size=16)  # the same but mixture_variance 0


def make(model=SPREAD, steps=4):
    mask = np.zeros((N, N), np.float32)
    mask[8:] = 1
    return rw.RegionalSamplerSession(model, rw.empty_latent(model, N, N), base=rw.SamplerConfig(positive="sky"),
                                     regions=[rw.Region(mask, rw.SamplerConfig("dpmpp_2m", positive="grass"))],
                                     steps=steps)


def index(folder):
    return json.loads((folder / "session.json").read_text())


def rewrite(folder, **changes):
    doc = index(folder)
    for key, value in changes.items():
        if value is KeyError:
            del doc[key]
        else:
            doc[key] = value
    (folder / "session.json").write_text(json.dumps(doc))


@pytest.fixture
def saved(tmp_path):
    s = make()
    s.step()
    s.save(tmp_path / "s")
    return tmp_path / "s"


def test_save_records_the_spec_and_load_on_the_same_model_continues(saved):
    assert index(saved)["model"] == SPREAD.spec and SPREAD.spec["mixture_variance"] == 0.01
    assert read_model_spec(saved) == SPREAD.spec
    loaded = rw.RegionalSamplerSession.load(saved, SPREAD)
    assert loaded.step_index == 1 and torch.equal(loaded.run(), make().run())
    model, spec = named_model(saved)  # the model the file names, rebuilt
    assert spec == SPREAD.spec and model.spec == SPREAD.spec and torch.equal(model.exemplars, SPREAD.exemplars)


def test_a_different_model_is_refused_naming_both(saved, unchanged):
    with unchanged(saved), pytest.raises(SessionFileError) as caught:
        rw.RegionalSamplerSession.load(saved, POINTS)
    message = str(caught.value)
    assert message.startswith("model: the session was saved with ToyWorld(n_exemplars=20, image_size=16, "
                              "mixture_variance=0.01), this model is ToyWorld(n_exemplars=20, image_size=16)")
    assert "differ in mixture_variance" in message and "check_model=False" in message
    # deliberately onto another model: the documented way
    loaded = rw.RegionalSamplerSession.load(saved, POINTS, check_model=False)
    assert loaded.step_index == 1 and loaded.model is POINTS
    with pytest.raises(ValueError, match="check_model: expected True or False, got 'no'"):
        rw.RegionalSamplerSession.load(saved, SPREAD, check_model="no")


def test_the_family_and_channel_checks_still_come_first(tmp_path):
    make().save(tmp_path / "s")
    with pytest.raises(SessionFileError, match="channel"):
        rw.RegionalSamplerSession.load(tmp_path / "s", rw.models.ToyWorld(latent="sd", n_exemplars=20, image_size=16))
    flow = rw.models.ToyWorld(n_exemplars=20, image_size=16, prediction="flow")
    with pytest.raises(SessionFileError, match=r"saved with a EPS model, this one is flow \(CONST\)"):
        rw.RegionalSamplerSession.load(tmp_path / "s", flow, check_model=False)  # check_model skips the spec only


def test_a_file_without_the_record_loads_as_before(saved):
    rewrite(saved, model=KeyError)
    assert read_model_spec(saved) is None and named_model(saved) is None
    assert rw.RegionalSamplerSession.load(saved, POINTS).step_index == 1  # nothing to compare with


def test_a_model_without_a_spec(tmp_path):
    """A model that cannot be described as data records nothing; a session that names a model is not
    loaded onto it unasked (nothing says it is the same one)."""
    from regional_widgets.models.base import with_model_sampling
    from regional_widgets.sampling.model_sampling import ModelSamplingDiscreteFlow

    flow = rw.models.ToyWorld(n_exemplars=20, image_size=16, prediction="flow")
    patched = with_model_sampling(flow, ModelSamplingDiscreteFlow(shift=3.0, multiplier=1.0))  # beyond its arguments
    assert patched.spec is None
    make(patched).save(tmp_path / "patched")
    assert "model" not in index(tmp_path / "patched")
    assert rw.RegionalSamplerSession.load(tmp_path / "patched", patched).cursor == 0

    class Wrapped:  # a model of one's own, without a spec
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

        spec = None

    make().save(tmp_path / "named")
    with pytest.raises(SessionFileError, match=r"this model \(Wrapped\) has no spec to compare with"):
        rw.RegionalSamplerSession.load(tmp_path / "named", Wrapped(SPREAD))
    assert rw.RegionalSamplerSession.load(tmp_path / "named", Wrapped(SPREAD), check_model=False).cursor == 0


def test_a_spec_that_cannot_be_recorded_is_left_out_with_a_warning(tmp_path):
    class Odd(rw.models.ToyWorld):
        @property
        def spec(self):
            return {"model": "Odd", "weights": "x" * 5000}  # over the 4096 characters a spec string may hold

    odd = Odd(n_exemplars=20, image_size=16)
    with pytest.warns(UserWarning, match=r"Odd's spec is not recorded.*model.weights"):
        make(odd).save(tmp_path / "odd")
    assert "model" not in index(tmp_path / "odd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make().save(tmp_path / "plain")  # a recordable spec: no warning


DEEP = {"model": "X", "kwargs": {}}
_node = DEEP["kwargs"]
for _ in range(9):
    _node["a"] = {}
    _node = _node["a"]

HOSTILE = {
    "a list": ([1, 2], "model: expected a model spec"),
    "a string": ("ToyWorld", "model: expected a model spec"),
    "a number": (3, "model: expected a model spec"),
    "an empty object": ({}, "model: expected a model spec"),
    "a huge object": ({"model": "X", "kwargs": {f"k{j}": "v" * 4000 for j in range(20)}}, "over the limit of 65536"),
    "a long string": ({"model": "X", "path": "p" * 5000}, "model.path: expected a string of at most 4096"),
    "deep": (DEEP, "model.kwargs.a.a.a.a.a.a.a: nested over 8 levels"),
    "a huge integer": ({"model": "ToyWorld", "seed": [1, [2, [3, True, None, "s", 1.5]]], "n": 10**400},
                       "model.n: expected a string, a finite number"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_records_are_refused_naming_the_field(saved, unchanged, case):
    value, match = HOSTILE[case]
    rewrite(saved, model=value)
    with unchanged(saved):
        with pytest.raises(SessionFileError, match=match):
            rw.RegionalSamplerSession.load(saved, SPREAD)
        with pytest.raises(SessionFileError, match=match):
            rw.RegionalSamplerSession.load(saved, SPREAD, check_model=False)  # the form is always checked
        with pytest.raises(SessionFileError, match=match):
            read_model_spec(saved)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-1e999"])
def test_non_finite_numbers_in_the_record_are_refused(saved, unchanged, text):
    raw = (saved / "session.json").read_text().replace('"mixture_variance": 0.01', f'"mixture_variance": {text}')
    assert text in raw
    (saved / "session.json").write_text(raw)
    with unchanged(saved), pytest.raises(SessionFileError, match="session.json: model.mixture_variance: expected"):
        rw.RegionalSamplerSession.load(saved, SPREAD)


def test_a_named_model_is_built_only_from_data(tmp_path, monkeypatch):
    """`build_named_model` runs no code a file names: a factory spec is refused before any import; a
    ToyWorld too large to build is refused; a diffusers folder a file names is never read."""
    imported = []
    monkeypatch.setattr("importlib.import_module", lambda name: imported.append(name))
    with pytest.raises(ValueError, match="factory 'os:system'.* is not built from a file"):
        build_named_model({"factory": "os:system", "kwargs": {"command": "echo hi"}})
    with pytest.raises(ValueError, match="is not built from a file"):
        build_named_model({"model": "Other"})
    assert imported == []
    with pytest.raises(ValueError, match="n_exemplars, image_size: 1000000 pictures of 4096x4096"):
        build_named_model({"model": "ToyWorld", "n_exemplars": 10**6, "image_size": 4096})
    with pytest.raises(ValueError, match="unexpected keyword"):
        build_named_model({"model": "ToyWorld", "bogus": 1})
    # a folder a file names is never read, even one that is here: the user gives it
    for path in (tmp_path / "gone", tmp_path):
        with pytest.raises(ValueError, match=f"made with the diffusers folder '{path}': a file never chooses"):
            build_named_model({"model": "DiffusersModel", "path": str(path), "torch_dtype": None})
    assert imported == []


def test_named_model_reports_a_model_it_cannot_build(saved, unchanged):
    rewrite(saved, model={"factory": "os:system", "kwargs": {}})
    with unchanged(saved), pytest.raises(SessionFileError, match="session.json: model: factory 'os:system'"):
        named_model(saved)


def test_spec_difference_and_description():
    a = {"model": "DiffusersModel", "path": "/m/sdxl", "torch_dtype": "float16", "device": "cuda",
         "timestep_map": "argmin", "clip_layer": None, "offload_encoders": False}
    assert spec_difference(a, dict(a, device="cpu", offload_encoders=True)) == []  # where it runs, not what
    assert spec_difference(a, dict(a, path="/m/other", torch_dtype=None)) == ["path", "torch_dtype"]
    assert spec_difference(a, None) == ["(no spec)"]
    assert describe_spec(a) == "DiffusersModel('/m/sdxl', torch_dtype='float16', timestep_map='argmin')"
    assert describe_spec(rw.models.ToyWorld().spec) == "ToyWorld()"
    assert describe_spec({"model": "X", "k": "v" * 400}, limit=50).endswith("...")
