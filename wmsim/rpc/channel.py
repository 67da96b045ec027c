"""The gRPC options both ends of the Dream service use."""

from __future__ import annotations

MAX_MESSAGE_MB = 256
"""Default message limit either way: a batch of 256 frames is 3 MB, gRPC's receive default 4 MB."""


def channel_options(
    max_message_mb: int = MAX_MESSAGE_MB, max_receive_bytes: int | None = None
) -> list[tuple[str, int]]:
    """Message limits on this end, and keepalive pings that notice a vanished peer.

    Args:
        max_message_mb: the largest message either way, in MiB.
        max_receive_bytes: a smaller limit on what this end receives (a server's requests).
    """
    size = max_message_mb * 2**20
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", min(size, max_receive_bytes or size)),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # the peer pings every 30 s: allow it (the default refuses pings closer than 5 minutes)
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
