"""onnx-gig inspect: what a model holds and what convert would do with it, before converting."""
from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Optional

NAME = "inspect"
HELP = "list a model's inputs, outputs, opset and op types, and whether each op has a rule"
DESCRIPTION = ("Show the model's inputs, outputs and opsets, every op type with its count, whether a rule exists "
               "for it (plain `ig`; `guided` where a guided set overrides it), whether it lies on the path convert "
               "differentiates, and the input and output convert would pick. An op of a domain other than the "
               "standard one (ai.onnx) has no rule. For a model convert already wrote, its method and contract "
               "instead. Nothing is written.")

GUIDED_SETS = ("gnl-ig", "gnl-ig-all")


@dataclass
class OpRow:
    op: str
    count: int
    rules: dict            # rule set name -> "plain" | "guided" | "-"
    on_path: Optional[bool]  # None when the model could not be normalised


@dataclass
class Report:
    path: str
    ir_version: int
    opsets: dict
    producer: str
    inputs: list
    outputs: list
    ops: list = field(default_factory=list)
    input_name: Optional[str] = None
    score_name: Optional[str] = None
    num_classes: Optional[int] = None
    input_shape: Optional[list] = None              # the explained input's dims after normalising
    dynamic_dims: list = field(default_factory=list)  # its dims, other than the batch, that stay dynamic
    pixel_input: Optional[dict] = None              # the integer input the explained floats are cast from
    refusals: dict = field(default_factory=dict)   # rule set name -> the one line convert would print
    problem: Optional[str] = None                  # why the model cannot be normalised at all
    converted: Optional[dict] = None               # a model convert wrote: its onnx_gig.* metadata, no prefix
    nodes: int = 0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx classifier (external data beside it is read)")
    p.add_argument("--input", dest="input_name", help="the image input, as for convert")
    p.add_argument("--output-name", help="the output to explain, as for convert")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _value_info(vi) -> dict:
    from ..loader import _dims, _elem_name

    return {"name": vi.name, "dtype": _elem_name(vi), "shape": _dims(vi)}


def inspect_model(path: str, input_name: Optional[str] = None, output_name: Optional[str] = None) -> Report:
    """Everything ``onnx-gig inspect`` prints, as data."""
    import onnx_graphsurgeon as gs

    from ..autodiff import get_rule_set, path_nodes, unsupported_ops
    from ..autodiff.builder import STANDARD_DOMAINS, op_label
    from ..errors import GigError
    from ..loader import load_model, normalise

    from ..contract import META_PREFIX

    model = load_model(path)
    g = model.graph
    inits = {t.name for t in g.initializer}
    rep = Report(path=str(path), ir_version=int(model.ir_version),
                 opsets={(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import},
                 producer=" ".join(x for x in (model.producer_name, model.producer_version) if x),
                 inputs=[_value_info(i) for i in g.input if i.name not in inits],
                 outputs=[_value_info(o) for o in g.output], nodes=len(g.node))
    meta = {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}
    if "method" in meta:  # convert's own output: convert refuses it, so say what it is instead of the check
        rep.converted = {k: _meta_value(v) for k, v in meta.items()}
        # the contract's inputs with defaults (baseline, alphas, ...) are initializers too: list them, marked
        rep.inputs = [{**_value_info(i), "optional": i.name in inits} for i in g.input]
        return rep
    counts = Counter(op_label(n.domain, n.op_type) for n in g.node)
    sets = {name: get_rule_set(name) for name in ("ig",) + GUIDED_SETS}
    plain = sets["ig"]

    path_ops: Optional[set] = None
    try:
        fg = normalise(model, input_name, output_name)
        rep.input_name, rep.score_name, rep.num_classes = fg.input_name, fg.score_name, fg.num_classes
        rep.input_shape = [d if isinstance(d, int) else ("?" if d is None else str(d)) for d in fg.input_shape]
        rep.dynamic_dims, rep.pixel_input = fg.dynamic_dims, fg.pixel_input
        graph = gs.import_onnx(fg.model)
        graph.toposort()
        tensors = graph.tensors()
        x, score = tensors[fg.input_name], tensors[fg.score_name]
        nodes, on_path = path_nodes(graph.nodes, x, [score])
        path = [n for n in nodes if any(o.name in on_path for o in n.outputs)]
        path_ops = {op_label(n.domain, n.op) for n in path}
        for name, rules in sets.items():
            blocked = {id(n) for n in unsupported_ops(graph.nodes, x, [score], rules)}  # foreign domains included
            missing = [n for n in path if id(n) in blocked]
            if missing:
                n = missing[0]
                why = f" (domain '{n.domain}' has no rules)" if (n.domain or "") not in STANDARD_DOMAINS else ""
                rep.refusals[name] = f"unsupported op '{op_label(n.domain, n.op)}' in node '{n.name}'{why}"
        for op in path_ops - set(counts):  # ops the normaliser introduced (e.g. by opset conversion)
            counts[op] += 0
    except GigError as exc:
        rep.problem = str(exc)

    for op in sorted(counts):
        cells = {}
        for name, rules in sets.items():
            rule = rules.lookup(op)
            cells[name] = "-" if rule is None else ("guided" if rule is not plain.lookup(op) else "plain")
        rep.ops.append(OpRow(op, counts[op], cells, None if path_ops is None else op in path_ops))
    return rep


def _meta_value(text: str):
    """A metadata value as data: JSON where it is JSON (preprocess, defaults, labels), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _print_converted(rep: Report) -> None:
    """A converted model's method, contract and metadata, in place of the conversion check."""
    meta = dict(rep.converted or {})
    print(f"this is an onnx-gig attribution model (method {meta.get('method')}, written by onnx-gig "
          f"{meta.get('version', '?')}; {rep.nodes} nodes): convert refuses it; explain images with it "
          f"(onnx-gig explain {rep.path} IMAGE), or convert the original classifier")
    print("metadata (onnx_gig.*):")
    for k, v in meta.items():
        if k == "labels" and isinstance(v, list):
            v = f"{len(v)} labels: " + ", ".join(f"'{x}'" for x in v[:3]) + (", ..." if len(v) > 3 else "")
        elif not isinstance(v, str):
            v = json.dumps(v)
        print(f"  {k}: {v}")


def _shape(d: dict) -> str:
    return "[" + ", ".join("?" if v is None else str(v) for v in d["shape"]) + "]"


def print_report(rep: Report) -> None:
    opsets = ", ".join(f"{k} {v}" for k, v in rep.opsets.items())
    print(f"{rep.path}: IR {rep.ir_version}, opset {opsets}" + (f", made by {rep.producer}" if rep.producer else ""))
    print("inputs:")
    for i in rep.inputs:
        print(f"  {i['name']}  {i['dtype']} {_shape(i)}" + ("  (optional: a default is in the model)"
                                                           if i.get("optional") else ""))
    print("outputs:")
    for o in rep.outputs:
        print(f"  {o['name']}  {o['dtype']} {_shape(o)}")
    if rep.converted is not None:
        _print_converted(rep)
        return
    width = max([len(r.op) for r in rep.ops] + [2])
    head = f"  {'op':<{width}}  count  {'ig':<6}" + "".join(f"  {s:<10}" for s in GUIDED_SETS) + "  on path"
    print(f"ops ({sum(r.count for r in rep.ops)} nodes; rule: plain / guided / - = none):")
    print(head)
    for r in rep.ops:
        path = "?" if r.on_path is None else ("yes" if r.on_path else "no")
        print(f"  {r.op:<{width}}  {r.count:5d}  {r.rules['ig']:<6}"
              + "".join(f"  {r.rules[s]:<10}" for s in GUIDED_SETS) + f"  {path}")
    if rep.problem:
        print(f"convert would refuse this model: {rep.problem}")
        return
    classes = f" ({rep.num_classes} classes)" if rep.num_classes else ""
    print(f"convert would explain '{rep.score_name}'{classes} with respect to input '{rep.input_name}'")
    for line in _input_notes(rep):
        print(f"  {line}")
    for name in ("ig",) + GUIDED_SETS:
        verdict = f"refused: {rep.refusals[name]}" if name in rep.refusals else "ok"
        print(f"  --method {name}: {verdict}")


def _input_notes(rep: Report) -> list[str]:
    """What the converted model's image input will be: dynamic dims kept, float pixels of an integer input."""
    notes = []
    shown = "[" + ", ".join(str(d) for d in rep.input_shape or []) + "]"
    if rep.pixel_input:
        notes.append(f"'{rep.input_name}' {shown} are the float32 pixels the graph casts from its "
                     f"{rep.pixel_input['dtype']} input '{rep.pixel_input['name']}' (the graph normalises them "
                     "itself; attributions and baselines are in pixel units 0-255, and explain feeds plain pixels)")
    if rep.dynamic_dims:
        dims = ", ".join(f"{i} ({rep.input_shape[i]})" for i in rep.dynamic_dims)
        notes.append(f"dynamic dims of '{rep.input_name}' {shown}: {dims}; the converted model keeps them "
                     "(one file for every size), or pin them with convert --input-shape")
    else:
        notes.append(f"'{rep.input_name}' {shown}: static sizes (the batch stays dynamic)")
    return notes


def run(a: argparse.Namespace) -> int:
    rep = inspect_model(a.model, a.input_name, a.output_name)
    if a.json:
        print(json.dumps(asdict(rep), indent=2))
    else:
        print_report(rep)
    return 0
