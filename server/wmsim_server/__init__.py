"""wmsim_server: serves exported dream models over gRPC with onnxruntime.

It reads model bundles only and never imports torch (enforced by
``tests/test_import_hygiene.py``), so a serving host needs no training stack.
"""
