"""Torch → ONNX export, parity verification and manifest writing for imgrestore's production models."""
