"""onnx-gig: Integrated Gradients with Guided Non-Linearity as ONNX graph rewriting."""
__version__ = "0.1.0"
