"""The two exported formats: one ExecuTorch program with a method per stage, and ONNX per stage."""
