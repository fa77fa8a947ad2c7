"""ONNX serving shared by the inference and rescore workers."""
