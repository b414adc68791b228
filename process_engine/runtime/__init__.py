"""The host of the walker: turns messages, timers and action outcomes into committed steps.

Depends on the ports and the engine only; adapters drive it.
"""
