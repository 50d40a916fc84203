"""What the user reads: ``results.md`` (markdown), the figures, and sweep summaries.

Everything here draws or words what the engine computed; nothing runs a network.
"""
