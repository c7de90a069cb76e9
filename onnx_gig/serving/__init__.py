"""Serving a converted model: a second runtime (OpenVINO), a Triton model repository, a KServe model server.

The converted model is one plain ONNX file whose contract (README, "The converted model's contract") is
what every server here exposes, under the same tensor names:

- ``signature``: the model's inputs, outputs, defaults and metadata, read from the file;
- ``openvino_runtime``: the model on OpenVINO, compared with onnxruntime in the tests;
- ``triton``: ``onnx-gig triton`` writes ``DIR/NAME/1/model.onnx`` and its ``config.pbtxt``;
- ``service``: requests to arrays to explanations, independent of any server framework;
- ``kserve_server``: ``onnx-gig serve``, KServe's Python model server around ``service``.

Only ``kserve_server`` and ``openvino_runtime`` need optional packages (``pip install 'onnx-gig[serve]'``,
``'onnx-gig[openvino]'``); they are imported when used. See docs/serving.md.
"""
