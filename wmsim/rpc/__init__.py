"""wmsim's gRPC contract: ``proto/wmsim/rpc/v1`` and the Python generated from it.

``wmsim.rpc.v1`` holds the generated modules (regenerate with
``scripts/generate-rpc.sh``; never edit them) and :mod:`wmsim.rpc.tensors` the
one table of tensor dtypes both ends use.
"""
