"""The onnxruntime layer: a bundle's graphs, the state arena of dream rows, and the dream rows.

Below both sides in the import graph: the server (``wmsim_server``), the
in-process clients (``wmsim_client``), export's check, ``wmsim dream`` and
``wmsim bundle eval`` all run dreams through it. It imports numpy, gymnasium's
seeding, onnxruntime and, where installed, OpenVINO (frames on the CPU); never
torch or grpc (``tests/test_import_hygiene.py``).
"""
