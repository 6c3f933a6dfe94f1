"""The training side (the ``train`` extra): data sets and their targets, model architectures, the
training loop, evaluation, checkpoints, ONNX export and packaging. It builds on
:mod:`emotorch.runtime`, never the reverse; data loading and evaluation need no PyTorch."""
