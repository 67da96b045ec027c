"""Generated from ``proto/wmsim/rpc/v1/dream.proto`` by ``scripts/generate-rpc.sh``."""
