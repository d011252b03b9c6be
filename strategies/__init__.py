"""Integrations with Avalanche (replay) and Flower (summaries) strategies."""

from strategies.replay import DistilledBuffer, DistilledGDumbPlugin, DistilledReplay, class_shares

__all__ = ["DistilledBuffer", "DistilledGDumbPlugin", "DistilledReplay", "class_shares"]
