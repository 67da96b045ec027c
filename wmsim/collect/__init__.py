"""The real game: Atari under the Atari 100k protocol, and collection into a replay."""
