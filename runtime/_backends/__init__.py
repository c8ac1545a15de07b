"""Runtime backends: the registry and the ONNX Runtime backend (`base`), the ExecuTorch program
(`executorch`) and the eager torch model a bundle came from (`eager`)."""
