"""Families of models from their fingerprints: ``FamilyClassifier`` (clustering around named
center models, prediction of new models), the K-Means/GMM maths it uses, and evaluation."""

from tensorguard.clustering.estimator import (
    PAPER_CENTERS,
    SCHEMA,
    THRESHOLD_RULE,
    UNKNOWN,
    Cluster,
    FamilyClassifier,
    Member,
    Neighbour,
    Rule,
    UnknownPrediction,
)
from tensorguard.clustering.evaluation import Evaluation, Misassigned, evaluate
from tensorguard.clustering.kmeans import Method

__all__ = ["PAPER_CENTERS", "SCHEMA", "THRESHOLD_RULE", "UNKNOWN", "Cluster", "Evaluation",
           "FamilyClassifier", "Member", "Method", "Misassigned", "Neighbour", "Rule",
           "UnknownPrediction", "evaluate"]
