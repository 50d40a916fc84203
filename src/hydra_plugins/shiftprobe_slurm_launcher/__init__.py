"""shiftprobe's Hydra launcher plugin, ``hydra/launcher=slurm`` (here, not in ``shiftprobe``: Hydra takes
launchers only from the ``hydra_plugins`` namespace package)."""
