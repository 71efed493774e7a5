"""Generation-time evaluation: sample from the policy, judge with a ground-truth reward, estimate KL(π‖π_ref).

- :class:`GenerationEvaluation`, a Lightning callback logging ``eval/reward``, ``eval/kl`` and sample texts;
- :class:`RewardFunction` and the built-in :class:`VaderSentiment` (optional ``sentiment`` extra) and
  :class:`CompletionLength` rewards, :class:`SequenceClassifierReward` (any Hugging Face reward model) and
  :class:`JudgeRanking` over a :class:`PairwiseJudge` such as :class:`LanguageModelJudge`;
- :func:`arithmetic_prompts` and :class:`ArithmeticCorrectness`, small arithmetic questions and a correctness reward;
- :func:`review_prompts`, lightpref's deterministic review prompts; ``lightpref build-dataset``
  turns prompts, a model and a reward into preference pairs. See ``docs/evaluation.md``.
"""

from lightpref.evaluation.arithmetic import ArithmeticCorrectness, arithmetic_prompts
from lightpref.evaluation.callback import GenerationEvaluation
from lightpref.evaluation.generation import Evaluation, Samples, SamplingSettings, evaluate_policy, sample_completions
from lightpref.evaluation.judges import JudgeRanking, LanguageModelJudge, PairwiseJudge
from lightpref.evaluation.prompts import read_prompts, review_prompts
from lightpref.evaluation.reward_models import SequenceClassifierReward
from lightpref.evaluation.rewards import CompletionLength, RewardFunction, VaderSentiment, load_reward

__all__ = [
    "ArithmeticCorrectness",
    "CompletionLength",
    "Evaluation",
    "GenerationEvaluation",
    "JudgeRanking",
    "LanguageModelJudge",
    "PairwiseJudge",
    "RewardFunction",
    "Samples",
    "SequenceClassifierReward",
    "SamplingSettings",
    "VaderSentiment",
    "arithmetic_prompts",
    "evaluate_policy",
    "load_reward",
    "read_prompts",
    "review_prompts",
    "sample_completions",
]
