"""Reasoning features of an SAE: vocabularies of reasoning words, ReasonScore, and feature analysis
(max-activating contexts, top words, density)."""
