"""Families of models from their fingerprints: ``FamilyClassifier`` (clustering around named
center models, the base model of new models by one of the prediction rules), the K-Means/GMM
maths it uses, evaluation, and the leave-one-out checks that tell which rule to trust."""

from tensorguard.clustering.estimator import (
    PAPER_CENTERS,
    SCHEMA,
    UNKNOWN,
    BaseSource,
    Cluster,
    FamilyClassifier,
    Member,
    Neighbor,
    UnknownPrediction,
)
from tensorguard.clustering.evaluation import Evaluation, Misassigned, evaluate
from tensorguard.clustering.kmeans import Method
from tensorguard.clustering.rules import PAPER_THRESHOLD, RULES, Rule, RuleSpec
from tensorguard.clustering.validation import (
    HeldOutFamily,
    Miss,
    RuleScore,
    Validation,
    leave_family_out,
    leave_one_out,
    validate,
)

__all__ = ["PAPER_CENTERS", "PAPER_THRESHOLD", "RULES", "SCHEMA", "UNKNOWN", "BaseSource", "Cluster",
           "Evaluation", "FamilyClassifier", "HeldOutFamily", "Member", "Method", "Misassigned", "Miss",
           "Neighbor", "Rule", "RuleScore", "RuleSpec", "UnknownPrediction", "Validation", "evaluate",
           "leave_family_out", "leave_one_out", "validate"]
