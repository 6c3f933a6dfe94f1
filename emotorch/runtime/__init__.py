"""The runtime: everything that reads faces without PyTorch (photos, detection and alignment, ONNX
Runtime sessions, the model registry, the pipeline, video, batch analysis and its report).

It imports no module of :mod:`emotorch.training`; PyTorch models reach it as
:class:`emotorch.runtime.classifier.Classifier` objects (tests/test_layers.py checks both)."""
