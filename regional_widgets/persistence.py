"""Persistence: a session to and from files (session folders, ComfyUI workflows and PNGs).

The file formats live in `io/` (plain data in and out, never the session); here a session's data
is handed to them and a session is built from what they read, through the session's public API
(`RegionalSamplerSession.state`, `.engine`, `.restore_at`). The session's `save`, `load`,
`to_comfy`, `save_png` and `from_comfy` (`SessionFiles`, a base class of the session) call these.
"""
from __future__ import annotations

import numpy as np

from .faithful import RunState
from .node_params import Quirks, SamplerConfig
from .sampling.model_sampling import as_model_sampling

STATE_TENSORS = ("latent", "base_latent", "denoised", "result", "sigma_map", "base_sigma_map", "times_map")


def _region_class():
    from .regions import Region

    return Region


def _doc_fields():
    """What session.json's configs and quirks hold, for `io.session_format` (which never imports the engines)."""
    from .io.session_format import DocFields

    return DocFields(config_keys=tuple(SamplerConfig().to_dict()), check_config=lambda config: SamplerConfig(**config),
                     quirk_names=tuple(Quirks().to_dict()))


def save_session(session, path):
    """`RegionalSamplerSession.save`."""
    from .io.session_files import write_session
    from .io.session_format import describe_model_sampling
    from .io.session_state import pack_tree

    state, model = session.state, session.model
    doc = {"node": session.node, "parameters": session.parameters(), "base": session.base.to_dict(),
           "regions": [{"config": r.config.to_dict(), "variation_seed": r.variation_seed,
                        "variation_strength": r.variation_strength, "variation_method": r.variation_method}
                       for r in session.regions],
           "batch_index": session.batch_index, "latent_channels": int(model.latent_channels),
           "model_sampling": describe_model_sampling(as_model_sampling(model)),
           "quirks": session.quirks.to_dict(),
           "cursor": state.cursor,
           "state": {"sigma": state.sigma, "sigma_next": state.sigma_next, "model_calls": state.model_calls,
                     "passes": list(state.passes)}}
    spec = recordable_spec(model, warn=True)
    if spec is not None:
        doc["model"] = spec
    tensors = {"latent_image": session.latent_image}
    tensors.update({f"state.{n}": getattr(state, n) for n in STATE_TENSORS if getattr(state, n) is not None})
    doc["mode"] = session.mode
    plain = session.engine.plain_state(state.extra)
    doc["extra"] = pack_tree(plain, "extra", tensors) if plain else None
    write_session(path, doc, {f"region_{j}": r.mask for j, r in enumerate(session.regions, 1)}, tensors)


def recordable_spec(model, warn=False):
    """The model's spec (`models.spec.spec_of`) as session.json records it, or None: a model without one,
    or (with a warning when ``warn``) one whose spec is not plain JSON data within session.json's limits."""
    from .io.session_format import SessionFileError, check_model_spec
    from .models.spec import spec_of

    try:
        spec = spec_of(model)
        if spec is not None:
            check_model_spec(spec)
        return spec
    except (SessionFileError, ValueError) as err:
        if warn:
            import warnings

            warnings.warn(f"model: {type(model).__name__}'s spec is not recorded in the session ({err}); "
                          "load cannot check that it gets the same model", UserWarning, stacklevel=4)
        return None


def model_mismatch(saved: dict, model):
    """Why ``model`` is not the model a session recorded (``saved``: its spec), or None when it is."""
    from .models.spec import describe_spec, spec_difference

    current = recordable_spec(model)
    differ = spec_difference(saved, current)
    if not differ:
        return None
    this = (f"this model ({type(model).__name__}) has no spec to compare with" if current is None else
            f"this model is {describe_spec(current)} (they differ in {', '.join(differ)})")
    return f"the session was saved with {describe_spec(saved)}, {this}"


MODEL_ADVICE = ("; load it onto the model it was saved with (rw.models.from_spec builds it from session.json's "
                "\"model\"), or pass check_model=False to load it onto this one")


def _model_check(model):
    def check(saved):
        why = model_mismatch(saved, model)
        if why:
            raise ValueError(why + MODEL_ADVICE)
    return check


def named_model(path):
    """``(model, spec)``: the model a session folder records, built by `models.spec.build_named_model` (a
    ToyWorld only: no code a file names runs, no folder a file names is read), or None where the file
    records none. A damaged index, or a model that is not built from a file, raises `SessionFileError`
    (the latter ``session.json: model: ...``)."""
    from .io.session_files import read_model_spec
    from .io.session_format import SessionFileError
    from .models.spec import build_named_model, describe_spec

    spec = read_model_spec(path)
    if spec is None:
        return None
    try:
        return build_named_model(spec), spec
    except (OSError, ValueError, KeyError, ImportError) as err:
        raise SessionFileError(f"session.json: model: {describe_spec(spec, 200)}: {err}") from None


def load_session(cls, path, model, check_model=True):
    """`RegionalSamplerSession.load`."""
    from .io.paths import FileSafetyError
    from .io.session_files import read_session
    from .io.session_format import SessionFileError, describe_model_sampling

    if not isinstance(check_model, bool):
        raise ValueError(f"check_model: expected True or False, got {check_model!r}")
    doc, masks, tensors = read_session(path, channels=model.latent_channels, downscale=model.downscale,
                                       fields=_doc_fields(),
                                       model_sampling=describe_model_sampling(as_model_sampling(model)),
                                       check_model=_model_check(model) if check_model else None)
    try:
        return _from_saved(cls, doc, masks, tensors, model)
    except (SessionFileError, FileSafetyError):
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise SessionFileError(f"session.json: invalid content ({type(err).__name__}: {err})") from None


def _from_saved(cls, doc, masks, tensors, model):
    """A session from checked file contents; the saved state is checked against the plan before use."""
    from .io.session_format import SessionFileError
    from .io.session_state import check_extra, check_state, unpack_tree

    Region = _region_class()
    regions = [Region(masks[f"region_{j}"], SamplerConfig(**r["config"]), r["variation_seed"],
                      r["variation_strength"], r["variation_method"]) for j, r in enumerate(doc["regions"], 1)]
    latent = tensors["latent_image"]
    if doc.get("batch_index") is not None:
        latent = {"samples": latent, "batch_index": doc["batch_index"]}
    session = cls(model, latent, base=SamplerConfig(**doc["base"]), regions=regions, node=doc["node"],
                  quirks=Quirks(**doc.get("quirks", {})), mode=doc.get("mode", "faithful"), **doc["parameters"])
    cursor, ops = doc["cursor"], session.ops
    if cursor > len(ops):
        raise SessionFileError(f"session.json: cursor: {cursor} is outside this run's 0..{len(ops)}")
    kinds = [op.kind for op in ops[:cursor]]
    check_state(doc, tensors, mode=session.mode, kinds=kinds, done=cursor == len(ops),
                restore_latent=session.restore_latent)
    extra = None
    if doc.get("extra") is not None:
        plain = unpack_tree(doc["extra"], tensors)
        check_extra(plain, session.latent_image.shape, len(session.regions) + 1, kinds)
        engine = session.engine
        extra = engine.live_state(engine.context(session.node_params()), plain)
    saved = doc["state"]
    state = RunState(**{n: tensors.get(f"state.{n}") for n in STATE_TENSORS}, cursor=cursor,
                     sigma=saved["sigma"], sigma_next=saved["sigma_next"], model_calls=saved["model_calls"],
                     passes=tuple(saved["passes"]), extra=extra)
    if cursor:
        session.restore_at(state)
    return session


def comfy_description(session, checkpoint) -> dict:
    """The session as the plain description `io.comfy` writes workflows from."""
    from .io.comfy import model_sampling_patch

    model = session.model
    batch, channels, h, w = session.latent_image.shape
    down = model.downscale
    description = {
        "node": session.node, "parameters": session.parameters(), "base": session.base.to_dict(),
        "regions": [{"config": r.config.to_dict(), "mask": r.mask, "variation_seed": r.variation_seed,
                     "variation_strength": r.variation_strength, "variation_method": r.variation_method}
                    for r in session.regions],
        "latent": {"width": w * down, "height": h * down, "batch_size": batch,
                   "empty": not bool(session.latent_image.any()), "batch_index": session.batch_index},
        "mode": session.mode, "quirks": session.quirks.to_dict(), "checkpoint": checkpoint}
    if channels == 16:  # SD3/Flux-style latents
        description["latent"]["node"] = "EmptySD3LatentImage"
    patch = model_sampling_patch(getattr(model, "model_sampling", None), w * down, h * down)
    if patch is not None:  # a flow shift that is not the checkpoint's default: ModelSamplingSD3/Flux
        description["model_sampling"] = patch
    return description


def write_comfy(session, path, checkpoint, format) -> list:
    """`RegionalSamplerSession.to_comfy`."""
    from .io.comfy_files import write_workflow_file

    return write_workflow_file(path, comfy_description(session, checkpoint), format)


def write_comfy_png(session, path, checkpoint) -> list:
    """`RegionalSamplerSession.save_png`."""
    from .io.comfy import check_expressible
    from .io.comfy_files import write_png

    description = comfy_description(session, checkpoint)
    check_expressible(description)  # before decoding
    rgb = session.model.decode(shown_latent(session)).clamp(0, 1).cpu().numpy()
    return write_png(path, np.concatenate(list(rgb), axis=1), description)


def shown_latent(session):
    """The latent `save_png` decodes: the result, else the current latent, as the screen and the CLI
    show it (`RegionalSamplerSession.picture`)."""
    return session.picture("latent" if session.result is None else "result")


def session_from_comfy(cls, source, model, mask_folder=None, node_id=None, missing_masks="error"):
    """`RegionalSamplerSession.from_comfy`."""
    from .io.comfy import ComfyWorkflowError
    from .io.comfy_files import report_warnings, read_source
    from .models import empty_latent

    if missing_masks not in ("error", "empty"):
        raise ValueError(f"missing_masks: expected 'error' or 'empty', got {missing_masks!r}")
    given = isinstance(source, (bytes, bytearray, memoryview))
    doc, report = read_source(None if given else source, data=bytes(source) if given else None,
                              name="upload" if given else None, mask_folder=mask_folder, node_id=node_id,
                              missing_mask=None if missing_masks == "error" else lambda region: None)
    size = (doc["latent"]["height"], doc["latent"]["width"])
    Region = _region_class()
    try:
        if doc.get("model_sampling") is not None:  # ModelSamplingSD3/Flux: the model, re-sampled
            from .io.comfy import model_sampling_of_patch
            from .models.base import with_model_sampling

            model = with_model_sampling(model, model_sampling_of_patch(doc["model_sampling"]))
        if doc["latent"].get("node") == "EmptySD3LatentImage" and model.latent_channels != 16:
            raise ValueError(f"EmptySD3LatentImage makes 16-channel latents; this model has "
                             f"{model.latent_channels}")
        latent = empty_latent(model, size[0], size[1], doc["latent"]["batch_size"])
        regions = [Region(np.zeros(size, np.float32) if r["mask"] is None else r["mask"],
                          SamplerConfig(**r["config"]), r["variation_seed"], r["variation_strength"],
                          r["variation_method"]) for r in doc["regions"]]
        session = cls(model, latent, base=SamplerConfig(**doc["base"]), regions=regions, node=doc["node"],
                      **doc["parameters"])
    except ValueError as err:
        raise ComfyWorkflowError(f"{report['source']}: the workflow does not fit this model: {err}") from None
    session.comfy_report = report
    session.status = report_warnings(report)
    return session


class SessionFiles:
    """The session's file methods (a base class of `RegionalSamplerSession`): each calls a function above."""

    def save(self, path):
        """Write the session to a folder: parameters JSON, masks npz (exact floats), latents safetensors.

        The state at the current sub-step is saved too, so load -> continue equals never stopping. The
        model's spec (`models.spec`, plain data such as ToyWorld's arguments), where it has one, is
        recorded as ``"model"`` in session.json: `load` checks it, ``python -m regional_widgets run``
        rebuilds the model from it.
        """
        save_session(self, path)

    @classmethod
    def load(cls, path, model, check_model=True) -> "RegionalSamplerSession":
        """Read a folder written by `save`; a damaged, tampered or mismatched file raises and builds nothing
        (`io.session_files.SessionFileError`; a symlink or a path outside the folder: `io.FileSafetyError`).

        A session records its model's spec (`models.spec`; where the model has one) and loads only onto a
        model of the same spec: another one raises `SessionFileError` (``model: ...``) naming both.
        ``check_model=False`` loads it onto another model deliberately (the model's family, schedule and
        latent channels are still checked). Files written before the record load onto any such model."""
        return load_session(cls, path, model, check_model)

    def to_comfy(self, path, checkpoint="model.safetensors", format="api") -> list:
        """Write the session as a ComfyUI workflow (JSON) with its masks as PNGs beside it.

        ``format``: ``"api"`` (ComfyUI's API format) or ``"ui"`` (the editor's format, laid out left
        to right, masks as ``LoadImageMask`` nodes). ``checkpoint`` stands in for this session's
        model. Masks are 8-bit (``round(mask * 255)``, read with ``LoadImageMask`` channel red).
        Raises `io.comfy.ComfyWorkflowError` for what the nodes cannot express: coherent mode,
        quirks switched off, a latent that is not empty or has a batch_index, no regions, an image
        size EmptyLatentImage cannot take. Returns the paths (the JSON first).
        """
        return write_comfy(self, path, checkpoint, format)

    def save_png(self, path, checkpoint="model.safetensors") -> list:
        """Write the image (the result decoded by the model; before the run ends, the current latent;
        on a flow model as the screen shows it, `shown_latent`; a batch side by side) as a PNG carrying the
        workflow as ComfyUI's images do (``prompt``: API, ``workflow``: editor format), the masks beside it
        as ``<stem>_region<j>.png``. Returns the paths."""
        return write_comfy_png(self, path, checkpoint)

    @classmethod
    def from_comfy(cls, source, model, mask_folder=None, node_id=None, missing_masks="error"
                   ) -> "RegionalSamplerSession":
        """A session from a ComfyUI workflow: an API-format or editor (UI-format) JSON, or a ComfyUI PNG
        (its ``prompt`` chunk, else ``workflow``); a path, or the file's bytes (then ``mask_folder``
        is needed). ``model`` stands in for its checkpoint. ``node_id`` picks the regional sampler
        node when there are several. Mask PNGs are read from ``mask_folder`` (default: the file's
        folder); ``missing_masks="empty"`` starts a region whose mask file is missing empty.

        What could not be mapped (a skipped LoRA loader, a missing mask, ignored widget values) is
        reported as `io.comfy_files.ComfyImportWarning` warnings, in ``status`` and in
        ``comfy_report`` (a dict, see `io.comfy_files.read_source`).
        """
        return session_from_comfy(cls, source, model, mask_folder, node_id, missing_masks)
