"""Export: a trained world model -> a model bundle of ONNX graphs (see :mod:`wmsim.bundle`)."""
