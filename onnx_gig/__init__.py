"""onnx-gig: Integrated Gradients with Guided Non-Linearity as ONNX graph rewriting.

``convert`` turns a CNN classifier into one ONNX model that outputs attributions;
``explain`` runs it with onnxruntime on an image and draws the heatmap; ``GigModel``
gives Captum-style ``attribute()`` on arrays.
"""
__version__ = "0.1.0"

from .api import ConvertResult, ExplainResult, convert, explain  # noqa: E402
from .runtime import GigModel  # noqa: E402

__all__ = ["convert", "explain", "GigModel", "ConvertResult", "ExplainResult", "__version__"]
