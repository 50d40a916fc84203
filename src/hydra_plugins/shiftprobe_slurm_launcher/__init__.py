"""shiftprobe's Hydra launcher plugin: ``hydra/launcher=slurm`` (``conf/hydra/launcher/slurm.yaml``).

Hydra takes launchers only from the ``hydra_plugins`` namespace package, so this one lives here, not in
``shiftprobe``. See ``slurm_launcher`` for what it adds to hydra-submitit-launcher's.
"""
