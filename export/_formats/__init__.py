"""The two exported formats: one ExecuTorch program with a method per stage, and ONNX per stage;
`registry.FORMATS` names each with its writer and the runtime backend that checks it."""
