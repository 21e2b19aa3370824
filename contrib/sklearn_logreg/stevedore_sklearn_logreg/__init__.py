"""Iris logistic-regression models served by stevedore-server: class labels and class probabilities."""

from __future__ import annotations

from .predictor import LogReg, LogRegProba, predictors

__all__ = ["LogReg", "LogRegProba", "predictors"]
