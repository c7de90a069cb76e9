"""onnx-gig: Integrated Gradients with Guided Non-Linearity as ONNX graph rewriting.

``convert`` turns a CNN classifier into one ONNX model that outputs attributions;
``explain`` runs it with onnxruntime on an image and draws the heatmap; ``explain_many`` does it for
files, folders and globs in one session (``ResultWriter`` writes the figures and tables), ``explain_ray``
on Ray actors (the ``ray`` extra; Ray is imported only when it runs); ``GigModel`` gives Captum-style
``attribute()`` on arrays.
"""
__version__ = "0.1.0"

from .api import ConvertResult, ExplainResult, convert, explain  # noqa: E402
from .batch import ExplainOptions, ImageResult, collect_inputs, explain_many  # noqa: E402
from .distributed import explain_ray  # noqa: E402
from .runtime import GigModel  # noqa: E402
from .writer import ResultWriter  # noqa: E402

__all__ = ["convert", "explain", "explain_many", "explain_ray", "collect_inputs", "ExplainOptions", "ImageResult",
           "ResultWriter", "GigModel", "ConvertResult", "ExplainResult", "__version__"]
