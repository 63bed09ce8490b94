"""The reference social data set and the spam backtest, with its two baselines."""

from __future__ import annotations

from engine.examples.social.data import (
    FRIENDSHIPS_TOPIC,
    MESSAGES_TOPIC,
    FriendshipColumns,
    MessageColumns,
    SocialData,
    SocialSummary,
    generate_social,
    merged_order,
)
from engine.examples.social.handwritten import ScoreColumns, spam_scores_handwritten
from engine.examples.social.source import social_source
from engine.examples.social.spam import SCORE_FIELDS, build_spam_pipeline
from engine.examples.social.wholelog import spam_scores_wholelog

__all__ = [
    "FRIENDSHIPS_TOPIC",
    "MESSAGES_TOPIC",
    "FriendshipColumns",
    "MessageColumns",
    "SCORE_FIELDS",
    "ScoreColumns",
    "SocialData",
    "SocialSummary",
    "build_spam_pipeline",
    "generate_social",
    "merged_order",
    "social_source",
    "spam_scores_handwritten",
    "spam_scores_wholelog",
]
