"""The ComfyUI editor's workflow ("UI format") to and from the API-format graph `comfy` understands.

One mapping of nodes to session parameters lives in `comfy`; this module only reshapes graphs.
The rules (docs/comfyui.md):

- a node's ``widgets_values`` follow its widget inputs (the literal inputs of `comfy_nodes.SCHEMAS`, in
  declaration order, optional ones last); an input converted to a socket (an ``inputs`` entry with
  a ``widget`` key) has no value there, unless the list holds a value for every widget (newer
  editors keep them);
- after an INT input named ``seed`` or ``noise_seed`` the editor stores one extra value (``fixed``,
  ``increment``, ``decrement``, ``randomize``); after another INT such a value is skipped only where
  it cannot be the next widget's value, or where more values than widgets are left; extra trailing
  values (the upload button of image loaders) are ignored;
- ``links`` are ``[id, from_node, from_slot, to_node, to_slot, type]`` (the object form with
  ``origin_id``/``target_id`` is read too); Reroute nodes are followed through, a PrimitiveNode
  gives its value to the widget it is linked to; a bypassed node (``mode`` 4) becomes an unknown
  node ``"<type> (bypassed)"``, which the import passes over and reports; groups, notes and
  positions are ignored.

Errors (`comfy_nodes.ComfyWorkflowError`) name the node, input and link.
"""
from __future__ import annotations

from ..sampling.checks import is_int
from .comfy_nodes import MAX_NODE_ID, SAVE_PREFIX, STRING, ComfyWorkflowError, Literal, NodeSchema, id_order
from .comfy_nodes import SCHEMAS as _SAMPLING_SCHEMAS

CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
SEED_NAMES = ("seed", "noise_seed")
PASS_THROUGH = ("Reroute",)
PRIMITIVE = "PrimitiveNode"
BYPASS = 4  # a node's "mode" when the editor bypasses it
# layout of written workflows (editor pixels): columns by depth, nodes stacked with room for titles
NODE_WIDTH, COLUMN_GAP, ROW_GAP, TITLE_HEIGHT = 320, 80, 50, 30
SLOT_HEIGHT, WIDGET_HEIGHT, TEXT_HEIGHT = 20, 26, 100
# the nodes after the sampler that written workflows end with (the importer does not need them)
SCHEMAS = {**_SAMPLING_SCHEMAS,
           "VAEDecode": NodeSchema({"samples": "LATENT", "vae": "VAE"}, ("IMAGE",)),
           "SaveImage": NodeSchema({"images": "IMAGE", "filename_prefix": STRING}, ())}


def widget_inputs(class_type) -> list:
    """``[(name, Literal)]``: the node's widget inputs in the order of its ``widgets_values``."""
    schema = SCHEMAS[class_type]
    names = [(n, s) for n, s in schema.required.items() if isinstance(s, Literal)]
    return names + [(n, s) for n, (s, _) in schema.optional.items() if n != "upload"]


def _has_control(name, spec) -> bool:
    return spec.kind == "INT" and name in SEED_NAMES


def _accepts(spec, value) -> bool:
    return spec.kind == "STRING" or (spec.kind == "COMBO" and value in spec.options)


# ---- UI -> API ------------------------------------------------------------------------------------

def _node_id(value, where) -> str:
    text = str(value)
    if not (isinstance(value, str) or is_int(value)) or not 0 < len(text) <= MAX_NODE_ID \
            or not text.isprintable():
        raise ComfyWorkflowError(f"{where}: node id {text[:MAX_NODE_ID]!r}: expected 1..{MAX_NODE_ID} printable "
                                 "characters")
    return text


def _links(ui) -> dict:
    """``{link id: (from node, from slot)}`` from either link form."""
    links = ui.get("links")
    if not isinstance(links, list):
        raise ComfyWorkflowError("workflow: 'links' must be a list")
    out = {}
    for link in links:
        if isinstance(link, dict):
            link = [link.get("id"), link.get("origin_id"), link.get("origin_slot"), link.get("target_id"),
                    link.get("target_slot"), link.get("type")]
        if not isinstance(link, list) or len(link) < 5 or not (isinstance(link[0], str) or is_int(link[0])) \
                or not is_int(link[2]):
            raise ComfyWorkflowError(f"workflow: a link {str(link)[:80]}: expected [id, from_node, from_slot, "
                                     "to_node, to_slot, type]")
        out[str(link[0])] = (_node_id(link[1], f"link {link[0]}"), link[2])
    return out


def ui_to_api(ui) -> tuple:
    """``(api_graph, titles, notes)`` from an editor workflow; ``titles``, ``notes``: ``{node id: text}``."""
    if not isinstance(ui, dict) or not isinstance(ui.get("nodes"), list):
        raise ComfyWorkflowError("workflow: expected the editor's format, an object with 'nodes' and 'links'")
    links = _links(ui)
    nodes = {}
    for node in ui["nodes"]:
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise ComfyWorkflowError(f"workflow: a node {str(node)[:80]}: expected an object with 'id' and 'type'")
        node_id = _node_id(node.get("id"), "workflow")
        if node_id in nodes:
            raise ComfyWorkflowError(f"node {node_id}: the id appears twice")
        for key, kind in (("inputs", list), ("widgets_values", (list, dict))):
            if not isinstance(node.get(key, []), kind):
                raise ComfyWorkflowError(f"node {node_id} ({node['type'][:200]}): '{key}' must be a list")
        nodes[node_id] = node
    graph, titles, notes = {}, {}, {}
    for node_id, node in nodes.items():
        kind = node["type"][:200]
        if kind in PASS_THROUGH or kind == PRIMITIVE:
            continue
        titles[node_id] = str(node.get("title") or kind)[:200]
        inputs = _inputs(nodes, links, node_id, node, notes)
        if node.get("mode") == BYPASS:  # the editor passes its inputs through: not a node we know, so passed over
            kind = f"{kind} (bypassed)"
        graph[node_id] = {"class_type": kind, "inputs": inputs}
    return graph, titles, notes


def _inputs(nodes, links, node_id, node, notes) -> dict:
    kind = node["type"][:200]
    where = f"node {node_id} ({kind})"
    inputs, sockets = {}, set()
    for entry in node.get("inputs", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ComfyWorkflowError(f"{where}: an input {str(entry)[:80]}: expected an object with a 'name'")
        if "widget" in entry:
            sockets.add(entry["name"])
        if entry.get("link") is not None:
            inputs[entry["name"]] = _follow(nodes, links, f"{where} input {entry['name']}", entry["link"])
    if kind not in SCHEMAS:
        return inputs  # an unknown node: its links only (its widgets cannot be named)
    values = node.get("widgets_values", [])
    if isinstance(values, dict):  # some nodes save {name: value}
        inputs.update({n: v for n, v in values.items() if n in dict(widget_inputs(kind)) and n not in inputs})
        return inputs
    widgets = widget_inputs(kind)
    needed = sum(1 + _has_control(n, s) for n, s in widgets if n not in sockets)
    every = sum(1 + _has_control(n, s) for n, s in widgets)
    present = widgets if sockets and len(values) >= every else [(n, s) for n, s in widgets if n not in sockets]
    if len(values) < needed:
        raise ComfyWorkflowError(f"{where}: widgets_values holds {len(values)} values; its widgets "
                                 f"({', '.join(n for n, _ in present)}) need {needed}")
    k = 0
    for j, (name, spec) in enumerate(present):
        if k >= len(values):
            raise ComfyWorkflowError(f"{where} input {name}: no value in widgets_values")
        if name not in inputs:
            inputs[name] = values[k]
        k += 1
        if spec.kind == "INT" and k < len(values) and values[k] in CONTROL_VALUES:
            after = present[j + 1][1] if j + 1 < len(present) else None
            left_over = len(values) - k > sum(1 + _has_control(n, s) for n, s in present[j + 1:])
            if _has_control(name, spec) or after is None or not _accepts(after, values[k]) or left_over:
                k += 1  # the editor's "control after generate" value
    upload = "upload" in SCHEMAS[kind].optional  # the upload button's trailing value
    if len(values) > k + upload:
        notes[node_id] = f"{where}: {len(values) - k - upload} extra widget value(s) ignored"
    return inputs


def _follow(nodes, links, where, link_id):
    """The API value an input's link gives: ``[node, slot]``, or a PrimitiveNode's literal; Reroutes followed."""
    seen = []
    while True:
        key = str(link_id)
        if key not in links:
            raise ComfyWorkflowError(f"{where}: link {key} is not in the workflow's links")
        source, slot = links[key]
        if source not in nodes:
            raise ComfyWorkflowError(f"{where}: link {key} comes from node {source}, which is not in the workflow")
        node = nodes[source]
        kind = node["type"]
        if kind == PRIMITIVE:
            values = node.get("widgets_values")
            if not isinstance(values, list) or not values:
                raise ComfyWorkflowError(f"node {source} (PrimitiveNode): no value in widgets_values")
            return values[0]
        if kind not in PASS_THROUGH:
            return [source, slot]
        if source in seen:
            loop = " -> ".join(seen[seen.index(source):] + [source])
            raise ComfyWorkflowError(f"{where}: link {key}: Reroute nodes form a cycle ({loop})")
        seen.append(source)
        entries = [e for e in node.get("inputs", []) if isinstance(e, dict) and e.get("link") is not None]
        if not entries:
            raise ComfyWorkflowError(f"node {source} (Reroute): not connected to anything ({where})")
        link_id = entries[0]["link"]


# ---- API -> UI ------------------------------------------------------------------------------------

def _link_inputs(node) -> list:
    return [(n, v) for n, v in node["inputs"].items() if isinstance(v, list) and len(v) == 2]


def _depths(graph) -> dict:
    depth = {}
    for node_id in sorted(graph, key=id_order):
        stack = [node_id]
        while stack:  # longest path from a node without links, iteratively
            current = stack[-1]
            pending = [str(v[0]) for _, v in _link_inputs(graph[current]) if str(v[0]) not in depth]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            depth[current] = 1 + max((depth[str(v[0])] for _, v in _link_inputs(graph[current])), default=-1)
    return depth


def _size(kind, n_links, n_outputs, n_widgets) -> list:
    text = any(s.kind == "STRING" and n == "text" for n, s in widget_inputs(kind)) if kind in SCHEMAS else False
    return [NODE_WIDTH, 10 + SLOT_HEIGHT * max(n_links, n_outputs, 1) + WIDGET_HEIGHT * n_widgets
            + (TEXT_HEIGHT if text else 0)]


def api_to_ui(graph: dict) -> dict:
    """An editor workflow of an API graph we built (known nodes, no cycles), laid out left to right by depth."""
    ids = {node_id: k for k, node_id in enumerate(sorted(graph, key=id_order), 1)}
    depth = _depths(graph)
    links, consumers = [], {}
    for node_id in sorted(graph, key=lambda i: (depth[i], id_order(i))):
        for name, (source, slot) in _link_inputs(graph[node_id]):
            link_id = len(links) + 1
            kind = SCHEMAS[graph[str(source)]["class_type"]].outputs[slot]
            links.append([link_id, ids[str(source)], slot, ids[node_id], None, kind])
            consumers.setdefault((str(source), slot), []).append(link_id)
    by_target = {}
    for link in links:
        by_target.setdefault(link[3], []).append(link)
    nodes, column_y = [], {}
    for order, node_id in enumerate(sorted(graph, key=lambda i: (depth[i], id_order(i)))):
        node = graph[node_id]
        kind = node["class_type"]
        schema = SCHEMAS[kind]
        mine = iter(by_target.get(ids[node_id], []))
        inputs = []
        for slot, (name, _) in enumerate(_link_inputs(node)):
            link = next(mine)
            link[4] = slot
            inputs.append({"name": name, "type": link[5], "link": link[0]})
        values = []
        for name, spec in widget_inputs(kind):
            values.append(node["inputs"].get(name, schema.optional.get(name, (None, None))[1]))
            if _has_control(name, spec):
                values.append("fixed")
        if "upload" in schema.optional:
            values.append("image")  # the upload button's value, as the editor stores it
        outputs = [{"name": out, "type": out, "links": consumers.get((node_id, k), []), "slot_index": k}
                   for k, out in enumerate(schema.outputs)]
        size = _size(kind, len(inputs), len(outputs), len(values))
        x = 50 + depth[node_id] * (NODE_WIDTH + COLUMN_GAP)
        y = column_y.get(depth[node_id], 50 + TITLE_HEIGHT)
        column_y[depth[node_id]] = y + size[1] + TITLE_HEIGHT + ROW_GAP
        nodes.append({"id": ids[node_id], "type": kind, "pos": [x, y], "size": size, "flags": {}, "order": order,
                      "mode": 0, "inputs": inputs, "outputs": outputs,
                      "properties": {"Node name for S&R": kind}, "widgets_values": values})
    return {"last_node_id": len(ids), "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {}, "version": 0.4}


def ui_is_ours(ui) -> bool:
    """An editor workflow we wrote: its SaveImage's filename_prefix is `comfy_nodes.SAVE_PREFIX`."""
    return isinstance(ui, dict) and isinstance(ui.get("nodes"), list) and any(
        isinstance(n, dict) and n.get("type") == "SaveImage" and isinstance(n.get("widgets_values"), list)
        and n["widgets_values"][:1] == [SAVE_PREFIX] for n in ui["nodes"])
