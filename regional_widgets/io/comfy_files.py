"""ComfyUI's files in and out: an API-format JSON, an editor (UI-format) JSON or a ComfyUI PNG.

`read_source` finds the format, converts the editor's graph to the API graph (`comfy_ui`), picks
the regional sampler node, skips what it can pass over (a LoRA loader between the checkpoint and
a pipe: its input of the same type goes through) and reports it, then hands the graph to `comfy_import`'s
one importer. `write_workflow_file` and `write_png` write the same graph as API JSON, UI JSON or a
PNG with both chunks; every file through `paths` (inside the folder, no symlinks, atomic, never
over a file we did not write).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from . import comfy, comfy_png, comfy_ui
from .comfy import build_workflow, png_is_ours, write_files
from .comfy_import import load_masks, parse_workflow, read_file
from .comfy_nodes import (MAX_WORKFLOW_BYTES, SAMPLER_NODES, SCHEMAS, ComfyWorkflowError, check_graph, id_order,
                          inputs_of, is_link, links_of)
from .paths import FileSafetyError, parse_json, read_bytes

FORMATS = ("api", "ui")
MAX_PASSED = 32  # unknown nodes in a row that one input may pass over


def read_source(path=None, *, data: bytes = None, name: str = None, mask_folder=None, node_id=None,
                missing_mask=None) -> tuple:
    """``(description, report)`` from a file ``path`` or from ``data`` (bytes named ``name``, e.g. an upload).

    Masks are read inside ``mask_folder`` (default: the file's folder; required for ``data``).
    ``missing_mask(region)`` (optional) gives a mask for a mask file that is not there (it is
    reported); without it a missing mask raises. ``report``: ``format``, ``node``, ``title``,
    ``skipped`` and ``ignored`` nodes, ``missing_masks``, ``notes`` and ``messages`` (the lines to show).
    """
    if path is not None:
        path = Path(path)
        name = str(path)
        data = read_file(path, comfy_png.MAX_PNG_BYTES if path.suffix.lower() == ".png" else MAX_WORKFLOW_BYTES)
        folder = Path(mask_folder) if mask_folder is not None else path.parent
    else:
        if mask_folder is None:
            raise ValueError("mask_folder: needed to read masks for a workflow given as bytes")
        folder = Path(mask_folder)
    graph, kind = _graph_of(bytes(data), name or "upload")
    notes = {}
    if isinstance(graph, dict) and isinstance(graph.get("nodes"), list):  # the editor's format
        graph, titles, notes = comfy_ui.ui_to_api(graph)
        kind += " (editor format)"
    else:
        titles = {str(i): str(n["_meta"].get("title"))[:200] for i, n in graph.items()
                  if isinstance(n, dict) and isinstance(n.get("_meta"), dict) and n["_meta"].get("title")} \
            if isinstance(graph, dict) else {}
    graph = check_graph(graph)
    top = _pick(graph, titles, node_id)
    pruned, skipped = _prune(graph, top, titles)
    description = parse_workflow(pruned)
    missing = []

    def fallback(region):
        missing.append(f"node {region['mask_node']} (LoadImageMask): mask file {region['mask_file']!r} not found "
                       f"in {str(folder)!r}; the region starts empty")
        return missing_mask(region)

    load_masks(description, folder, fallback if missing_mask is not None else None)
    ignored = sorted((i for i in graph if i not in pruned and i not in skipped), key=id_order)
    report = {"source": name, "format": kind, "node": top, "title": titles.get(top, graph[top]["class_type"]),
              "skipped": [skipped[i] for i in sorted(skipped, key=id_order)],
              "ignored": [f"{i} ({graph[i]['class_type']})" for i in ignored], "missing_masks": missing,
              "notes": [notes[i] for i in sorted(notes, key=id_order) if i in pruned]}
    report["messages"] = [s["message"] for s in report["skipped"]] + missing + report["notes"]
    return description, report


class ComfyImportWarning(UserWarning):
    """Something of a ComfyUI workflow that the import could not map (a skipped node, a missing mask)."""


def report_warnings(report: dict) -> str:
    """Warn once per line of ``report["messages"]``; returns the one-line status to show."""
    for message in report["messages"]:
        warnings.warn(message, ComfyImportWarning, stacklevel=3)
    where = f"node {report['node']} ({report['title']!r}) from {report['source']}"
    if not report["messages"]:
        return f"imported {where}"
    return f"imported {where}; not mapped: " + "; ".join(report["messages"])


def _graph_of(data: bytes, name: str) -> tuple:
    if comfy_png.is_png(data):
        try:
            chunks = comfy_png.read_chunks(data, name)
        except comfy_png.ComfyPngError as err:
            raise ComfyWorkflowError(str(err)) from None
        for chunk in comfy_png.CHUNKS:
            if chunks[chunk] is not None:
                return chunks[chunk], f"PNG chunk {chunk!r}"
        raise ComfyWorkflowError(f"{name}: a PNG without a ComfyUI workflow (no 'prompt' or 'workflow' text chunk)")
    if len(data) > MAX_WORKFLOW_BYTES:
        raise ComfyWorkflowError(f"{name}: {len(data)} bytes, over the limit of {MAX_WORKFLOW_BYTES} bytes")
    try:
        return parse_json(data), "JSON"
    except (ValueError, RecursionError) as err:
        raise ComfyWorkflowError(f"{name}: cannot be read as JSON ({err})") from None


def _pick(graph, titles, node_id) -> str:
    candidates = sorted((i for i, n in graph.items() if n["class_type"] in SAMPLER_NODES), key=id_order)
    listed = ", ".join(f"{i} ({graph[i]['class_type']}: {titles.get(i, graph[i]['class_type'])!r})"
                       for i in candidates) or "none"
    if node_id is not None:
        if str(node_id) not in candidates:
            raise ComfyWorkflowError(f"node_id={node_id!r}: not a {' or '.join(SAMPLER_NODES)} node of this "
                                     f"workflow; candidates: {listed}")
        return str(node_id)
    if len(candidates) != 1:
        raise ComfyWorkflowError(f"workflow: expected exactly one {' or '.join(SAMPLER_NODES)} node, found {listed}"
                                 + ("; choose one with node_id=" if candidates else ""))
    return candidates[0]


def _prune(graph, top, titles) -> tuple:
    """The sampler's upstream graph, unknown nodes passed over where one input of the wanted type goes
    through them; ``skipped``: ``{node id: {node, class_type, title, message}}``."""
    out, skipped, stuck, queue = {}, {}, [], [top]
    while queue:
        node_id = queue.pop()
        if node_id in out:
            continue
        node = graph[node_id]
        inputs = dict(node["inputs"])
        wanted = inputs_of(node)
        for name, value, source in links_of(graph, node_id):
            if graph[source]["class_type"] not in SCHEMAS:
                kind = wanted.get(name)
                through = _pass_over(graph, source, kind, set()) if isinstance(kind, str) else None
                if through is None:
                    stuck.append(source)
                    continue
                for passed in through[1]:
                    skipped.setdefault(passed, _skip_entry(graph, titles, passed, kind, node_id, name))
                inputs[name] = value = through[0]
                source = str(value[0])
            queue.append(source)
        out[node_id] = {"class_type": node["class_type"], "inputs": inputs}
    if stuck:
        listed = ", ".join(f"{i} ({graph[i]['class_type']})" for i in sorted(set(stuck), key=id_order))
        also = "; it could pass over " + ", ".join(f"{i} ({graph[i]['class_type']})" for i in
                                                    sorted(skipped, key=id_order)) if skipped else ""
        raise ComfyWorkflowError(f"workflow: nodes upstream of the regional sampler (node {top}) that regional_widgets "
                                 f"does not understand and cannot pass over: {listed}{also}")
    return out, skipped


def _pass_over(graph, node_id, kind, seen):
    """``([source, slot], passed ids)``: the one link of type ``kind`` into unknown ``node_id``, or None."""
    if node_id in seen or len(seen) > MAX_PASSED:
        return None
    seen = seen | {node_id}
    found = {}
    for value in graph[node_id]["inputs"].values():
        if not is_link(value) or str(value[0]) not in graph:
            continue
        source, slot = str(value[0]), value[1]
        source_kind = graph[source]["class_type"]
        if source_kind in SCHEMAS:
            outputs = SCHEMAS[source_kind].outputs
            if 0 <= slot < len(outputs) and outputs[slot] == kind:
                found[(source, slot)] = [node_id]
        else:
            deeper = _pass_over(graph, source, kind, seen)
            if deeper is not None:
                found[tuple(deeper[0])] = [node_id] + deeper[1]
    if len(found) != 1:
        return None
    (link, passed), = found.items()
    return [link[0], link[1]], passed


def _skip_entry(graph, titles, node_id, kind, consumer, name) -> dict:
    class_type = graph[node_id]["class_type"]
    title = titles.get(node_id, class_type)
    return {"node": node_id, "class_type": class_type, "title": title,
            "message": f"node {node_id} ({class_type}, title {title!r}) skipped: not understood by regional_widgets; "
                       f"its {kind} input goes straight on to node {consumer} input {name} (its effect is not "
                       "reproduced)"}


# ---- writing ------------------------------------------------------------------------------------

def _ui_json_is_ours(folder, name) -> bool:
    try:
        return comfy_ui.ui_is_ours(parse_json(read_bytes(folder, name, MAX_WORKFLOW_BYTES)))
    except (OSError, ValueError, RecursionError):
        return False


def write_workflow_file(path, description: dict, format: str = "api") -> list:
    """``path`` as an API-format (``"api"``) or editor (``"ui"``) JSON, masks beside it; returns the paths."""
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(map(repr, FORMATS))}, got {format!r}")
    if format == "api":
        return comfy.write_workflow(path, description)
    path = Path(path)
    graph, mask_files = build_workflow(description, mask_prefix=f"{path.stem}_region")
    files = {**mask_files, path.name: json.dumps(comfy_ui.api_to_ui(graph), indent=2).encode()}
    return write_files(path.parent, files, {n: (png_is_ours if n in mask_files else _ui_json_is_ours)
                                            for n in files})


def write_png(path, image, description: dict) -> list:
    """``path``: ``image`` as a PNG carrying ``prompt`` (API graph) and ``workflow`` (editor graph), the
    masks beside it as ``<stem>_region<j>.png``; returns the paths (the image first)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise FileSafetyError(f"{str(path)!r}: a ComfyUI image is a .png file")
    graph, mask_files = build_workflow(description, mask_prefix=f"{path.stem}_region")
    files = {**mask_files, path.name: comfy_png.png_bytes(image, {"prompt": graph,
                                                                  "workflow": comfy_ui.api_to_ui(graph)})}
    return write_files(path.parent, files, {n: png_is_ours for n in files})
