"""The /ws/gpu worker protocol: frames, signing, close reasons and a session state machine (no I/O)."""
