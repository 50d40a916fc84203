"""The Hydra app: ``train(cfg)`` and ``evaluate(cfg)`` wiring, config checks, checkpoint compatibility.

The root ``train.py`` / ``eval.py`` are thin ``@hydra.main`` wrappers around ``run(cfg, train)``.
"""
