"""Release: the gate, the model registry, ONNX export of a family and the reviewer Bento build."""
