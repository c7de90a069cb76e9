"""onnx-gig: Integrated Gradients with Guided Non-Linearity as ONNX graph rewriting.

``convert`` turns a CNN classifier into one ONNX model that outputs attributions;
``explain`` runs it with onnxruntime on an image and draws the heatmap; ``explain_many`` does it for
files, folders and globs in one process (``ResultWriter`` writes the figures and tables), ``explain_ray``
on Ray actors (the ``ray`` extra; Ray is imported only when it runs); ``GigModel`` gives Captum-style
``attribute()`` on arrays.
"""
__version__ = "0.1.0"

__all__ = ["convert", "explain", "explain_many", "explain_ray", "collect_inputs", "ExplainOptions", "ImageResult",
           "ResultWriter", "GigModel", "ConvertResult", "ExplainResult", "__version__"]
_LAZY = {"convert": "api", "explain": "api", "ConvertResult": "api", "ExplainResult": "api", "GigModel": "runtime",
         "explain_many": "batch", "collect_inputs": "batch", "ExplainOptions": "batch", "ImageResult": "batch",
         "ResultWriter": "writer", "explain_ray": "distributed"}


def __getattr__(name: str):
    """The public names, imported on first use: ``python -m onnx_gig.cli`` loads only what its command needs."""
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
