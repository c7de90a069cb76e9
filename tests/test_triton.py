"""onnx-gig triton: the repository layout and config.pbtxt, checked with Triton's own model-config protobuf.

The config is parsed by ``tritonclient.grpc.model_config_pb2.ModelConfig`` (strict text format: an unknown
field or a wrong type fails) and checked against the inputs and outputs onnxruntime reports for the
model, with the rules Triton's ONNX Runtime backend applies when it loads a model
(onnxruntime_backend/src/onnxruntime.cc, ValidateInputs / ValidateOutputs / CompareDimsSupported):
required config inputs = the model's non-initializer inputs; optional inputs only overridable
initializers and only with max_batch_size 0; inputs' dims compatible (-1 in the model matches anything),
outputs' dims exact; with batching, the batch dim is dropped and reshape applies.
"""
from __future__ import annotations

import importlib
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnx_gig import convert
from onnx_gig.cli import main
from onnx_gig.errors import InputError
from onnx_gig.serving.signature import read_signature
from onnx_gig.serving.triton import config_dict, config_json, to_pbtxt, write_repository


def need(module: str):
    """An optional test dependency: skipped on a developer's machine without it; in CI (which installs the
    test extra) a missing package fails."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="module")
def pb():
    mc = need("tritonclient.grpc.model_config_pb2")
    from google.protobuf import json_format, text_format
    return mc, text_format, json_format


@pytest.fixture(scope="module")
def small_gig(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from torch_nets import export, seeded_small_cnn

    folder = tmp_path_factory.mktemp("triton")
    src = folder / "small.onnx"
    src.write_bytes(export(seeded_small_cnn(), torch.zeros(1, 3, 24, 24)))
    return convert(src, folder / "small_gig.onnx").path


ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64", "tensor(int32)": "TYPE_INT32",
             "tensor(float16)": "TYPE_FP16", "tensor(double)": "TYPE_FP64", "tensor(bool)": "TYPE_BOOL"}


def dims_of(arg) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else -1 for d in arg.shape]


def check_against_onnxruntime(cfg, path):
    """Triton's ONNX Runtime backend's load-time checks, against what onnxruntime reports for the model."""
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    required = {i.name: i for i in s.get_inputs()}
    overridable = {i.name: i for i in s.get_overridable_initializers()}
    outputs = {o.name: o for o in s.get_outputs()}
    batching = cfg.max_batch_size > 0
    dtype_name = {v.number: v.name for v in type(cfg.input[0]).DESCRIPTOR.fields_by_name["data_type"].enum_type.values}

    def config_dims(io):
        return list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)

    def model_dims(arg):
        d = dims_of(arg)
        if batching:
            assert d and d[0] == -1, f"{arg.name}: batching needs a dynamic first dim, model has {d}"
            d = d[1:]
        return d

    declared_required = [i for i in cfg.input if not i.optional]
    assert len(declared_required) == len(required), "config's required inputs != model's non-initializer inputs"
    for io in cfg.input:
        if io.optional:
            assert not batching, "optional inputs are refused in batching models"
            assert io.name in overridable, f"optional input {io.name} is not an overridable initializer"
            arg = overridable[io.name]
        else:
            assert io.name in required, f"required input {io.name} is not a model input"
            arg = required[io.name]
        assert dtype_name[io.data_type] == ORT_TYPES[arg.type], io.name
        want, got = model_dims(arg), config_dims(io)
        assert len(want) == len(got), f"{io.name}: rank {len(got)} in config, {len(want)} in the model"
        assert all(m == -1 or m == c for m, c in zip(want, got)), f"{io.name}: dims {got} vs model {want}"
    assert {o.name for o in cfg.output} == set(outputs), "every model output is declared, and nothing else"
    for io in cfg.output:
        arg = outputs[io.name]
        assert dtype_name[io.data_type] == ORT_TYPES[arg.type], io.name
        assert config_dims(io) == model_dims(arg), f"{io.name}: dims {config_dims(io)} vs model {model_dims(arg)}"
    assert cfg.HasField("dynamic_batching") == batching
    return s


@pytest.mark.parametrize("batch", [0, 4])
@pytest.mark.parametrize("which", ["demo", "small"])
def test_config_parses_with_triton_schema_and_matches_model(pb, which, batch, request, tmp_path):
    mc, text_format, json_format = pb
    path = request.getfixturevalue("demo_gig" if which == "demo" else "small_gig")
    repo = tmp_path / "repo"
    assert main([*"triton".split(), str(path), "--repository", str(repo), "--name", "gig",
                 "--max-batch-size", str(batch), "--device", "cpu"]) == 0
    folder = repo / "gig"
    assert (folder / "1" / "model.onnx").read_bytes() == path.read_bytes(), "the model is copied unchanged"
    cfg = text_format.Parse((folder / "config.pbtxt").read_text(encoding="utf-8"), mc.ModelConfig())
    assert cfg.name == "gig" and cfg.backend == "onnxruntime" and cfg.max_batch_size == batch
    assert cfg.default_model_filename == "model.onnx"
    assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    check_against_onnxruntime(cfg, path)

    sig = read_signature(path)
    names = [i.name for i in cfg.input]
    if batch:
        assert names == [sig.image.name]
        assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
    else:
        assert names == [t.name for t in sig.inputs]
        assert [i.optional for i in cfg.input] == [False] + [True] * (len(names) - 1)
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert cfg.parameters["onnx_gig.preprocess"].string_value == meta["onnx_gig.preprocess"]
    labels = sig.labels
    if labels:  # the demo: Triton's classification extension gets the label file
        assert cfg.parameters["onnx_gig.labels"].string_value == meta["onnx_gig.labels"]
        scores = next(o for o in cfg.output if o.name == "scores")
        assert scores.label_filename == "labels.txt"
        assert (folder / "labels.txt").read_text(encoding="utf-8").splitlines() == labels
    # the JSON form (what /v2/models/NAME/config answers) is the same message
    as_json = config_json(config_dict(sig, "gig", batch, "cpu", labels_file="labels.txt" if labels else None))
    assert json_format.ParseDict(as_json, mc.ModelConfig()) == cfg


def test_runs_as_triton_would_feed_it(pb, small_gig):
    """Feed onnxruntime exactly the tensors each config declares, with the batch Triton would form."""
    mc, text_format, _ = pb
    sig = read_signature(small_gig)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *sig.image.shape[1:])).astype(np.float32)

    full = text_format.Parse(to_pbtxt(config_dict(sig, "m", 0)), mc.ModelConfig())
    s = check_against_onnxruntime(full, small_gig)
    feed = {sig.image.name: x, "target": np.array([1, -1, 4], np.int64),
            "alphas": np.array([0.25, 0.75], np.float32), "step_weights": np.array([0.5, 0.5], np.float32)}
    assert set(feed) <= {i.name for i in full.input}
    res = dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))
    for io in full.output:
        assert len(res[io.name].shape) == len(io.dims)
        assert all(d == -1 or d == g for d, g in zip(io.dims, res[io.name].shape))
    assert res["target_class"][0] == 1 and res["target_class"][2] == 4

    batched = text_format.Parse(to_pbtxt(config_dict(sig, "m", 4)), mc.ModelConfig())
    # three requests of one image each, merged by the dynamic batcher into one batch of three
    res = dict(zip([o.name for o in s.get_outputs()], s.run(None, {sig.image.name: x})))
    for io in batched.output:
        per_request = list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)
        assert list(res[io.name].shape) == [3, *per_request]


def test_refuses_to_overwrite_and_bad_names(small_gig, tmp_path):
    write_repository(small_gig, tmp_path, "m")
    with pytest.raises(InputError, match="--force"):
        write_repository(small_gig, tmp_path, "m")
    write_repository(small_gig, tmp_path, "m", overwrite=True)
    write_repository(small_gig, tmp_path, "m", version=2)
    assert (tmp_path / "m" / "2" / "model.onnx").is_file()
    with pytest.raises(InputError, match="model name"):
        write_repository(small_gig, tmp_path, "a/b")
    with pytest.raises(InputError, match="max-batch-size"):
        write_repository(small_gig, tmp_path, "n", max_batch_size=-1)


def test_cli_reports_errors_in_one_line(small_gig, tmp_path, capsys):
    assert main(["triton", str(small_gig), "--repository", str(tmp_path)]) == 0
    assert main(["triton", str(small_gig), "--repository", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["triton", str(tmp_path / "missing.onnx"), "--repository", str(tmp_path)]) == 2
