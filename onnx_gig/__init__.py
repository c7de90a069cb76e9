"""onnx-gig: Integrated Gradients with Guided Non-Linearity as ONNX graph rewriting.

``convert`` turns a CNN classifier into one ONNX model that outputs attributions;
``explain`` runs it with onnxruntime on an image and draws the heatmap; ``GigModel``
gives Captum-style ``attribute()`` on arrays.
"""
__version__ = "0.1.0"

__all__ = ["convert", "explain", "GigModel", "ConvertResult", "ExplainResult", "__version__"]
_LAZY = {"convert": "api", "explain": "api", "ConvertResult": "api", "ExplainResult": "api", "GigModel": "runtime"}


def __getattr__(name: str):
    """The public names, imported on first use: ``python -m onnx_gig.cli`` loads only what its command needs."""
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
