"""The model step: the ONNX model registry, running a model tile by tile, and the profile guess that picks one."""
