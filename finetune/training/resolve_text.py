"""A text task's decisions (what :func:`~finetune.training.resolve.resolve` makes for texts): the backbone, the
sequence cap from the training texts' token counts, phase 2's unfrozen layers by the training tokens, the learning
rates and patience, and whether the bag-of-words blend ends the run. Pure: config and facts in, a recipe out.
"""

from __future__ import annotations

from ..config import TrainConfig
from ..errors import ConfigError
from .resolve import Facts, Recipe, _check_against_data, _recipe

#: Text: the phase-2 learning rate when the config leaves it open (BERT fine-tuning's usual 2e-5 to 5e-5).
TEXT_TUNE_LR = 5e-5
#: Word vectors: phase 2's learning rate for the unfrozen embedding (and the convolution and head with it).
WORD_TUNE_LR = 1e-4
#: Text: phase 2's early-stopping patience when the config leaves it open (bench/README.md, Text).
TEXT_TUNE_PATIENCE = 3
#: Text: phase 1's learning rate when the config keeps the image default (validation probe in bench/README.md).
TEXT_HEAD_LR = 1e-2
#: Text: phase 2's most work per epoch for the default unfreeze point (2 layers at least), in training tokens x unfrozen layers of a
#: 384-wide encoder (MiniLM-L6's; a wider layer counts (width / 384)^2 times): 2 to 4 layers, the more the fewer
#: the texts. On held-out training reviews 3-4 layers beat 2 by 1-2 points at 300 and 1,000 reviews (blended with
#: the bag of words); at 4,000 two layers already take most of the time goal (bench/README.md, Text).
TEXT_TUNE_WORK = 250_000


def resolve_text(config: TrainConfig, facts: Facts) -> Recipe:
    """The recipe of a text task (see :func:`~finetune.training.resolve.resolve`)."""
    from ..data.text import TextSpec
    from ..data.words import uses_words

    defaults = TrainConfig()
    image_only = [key for key in ("image_size", "from_model", "resize", "bn_stats", "feature_taps", "mixup")
                  if getattr(config, key) != getattr(defaults, key)]
    if config.augment not in (defaults.augment, "none"):
        image_only.append("augment")
    if image_only:
        raise ConfigError(f"{', '.join(image_only)}: image option(s) given to a text task; drop "
                          + " ".join(f"--{k.replace('_', '-')}" for k in image_only))
    _check_against_data(config, facts)
    backbone, notes = facts.backbone, []
    decided = config.to_dict()
    if not decided["data"]:
        decided["data"] = facts.data_root
    if backbone.name != config.backbone:
        notes.append(f"text data: backbone {backbone.name} ({backbone.family}), the offline default for text")
    word_level = uses_words(backbone.name)
    tune_inputs = config.tune_inputs
    if word_level:
        tune_inputs = "images"
        decided["cache_features"] = False
        notes.append(f"GloVe: the embedding holds the {len(facts.vocabulary):,} words of the training and validation "
                     "texts (GloVe's own vectors where it has them); phase 1 trains the convolution and the head "
                     "live with the embedding frozen (a lookup costs nothing to cache), phase 2 unfreezes the embedding")
    elif tune_inputs == "auto":
        tune_inputs = "activations" if backbone.cacheable else "images"
        notes.append("phase 2 on cached hidden states at the cut: the frozen layers run once per text"
                     if backbone.cacheable else
                     f"phase 2 trains live on token batches: {backbone.family} layers need more than the states and "
                     "the padding mask, so the encoder is not cut")
    decided.update(backbone=backbone.name, augment="none", cache_variants=0, tune_inputs=tune_inputs)
    limit = (backbone.max_length or 512) if word_level else min(backbone.max_length or 512, 512)
    if config.sequence_length is None:
        p50, p90, p95, p99, longest = facts.token_lengths or (128,) * 5
        length = int(min(limit, max(32, -(-p95 // 32) * 32)))
        cut = ""
        if longest > length:
            over = sum(n > length for n in facts.text_lengths)
            cut = (f"; {over} of {len(facts.text_lengths)} training texts are longer and are cut to their first "
                   f"{length} tokens" if facts.text_lengths else "; texts longer are cut (head)")
        trained = f", {backbone.trained_length} in its sentence-transformers training" if backbone.trained_length else ""
        notes.append(f"sequence length {length} tokens: the 95th percentile of the training texts (median {p50}, "
                     f"longest {longest}), rounded up to 32, at most the checkpoint's {limit} positions{trained}{cut}")
    else:
        length = config.sequence_length
        if length > limit:
            raise ConfigError(f"sequence_length: {length} is over {backbone.name}'s {limit} positions")
        over = sum(n > length for n in facts.text_lengths)
        if over:
            notes.append(f"sequence length {length} tokens (given): {over} of {len(facts.text_lengths)} training "
                         "texts are longer and are cut to their first tokens")
    decided["sequence_length"] = length
    if config.tune_patience is None and config.patience == defaults.patience:
        decided["tune_patience"] = TEXT_TUNE_PATIENCE
        notes.append(f"phase-2 patience {TEXT_TUNE_PATIENCE}: on the validation splits of the Fine Foods draws "
                     "(300, 1,000 and 4,000 reviews, minilm_l6) phase 2's val loss was lowest at its 2nd-4th epoch "
                     "and rose after")
    given = [k for k in ("unfreeze_from", "unfreeze_blocks", "unfreeze_fraction") if decided[k] is not None]
    if not given:
        decided["unfreeze_blocks"] = 1 if word_level else _text_unfrozen_layers(backbone, facts, length, notes)
    if word_level and decided["tune_lr"] is None:
        decided["tune_lr"] = WORD_TUNE_LR
        notes.append(f"phase-2 learning rate {WORD_TUNE_LR:g}: the word vectors move slowly (lr/10)")
    if config.lr == defaults.lr and not word_level:
        decided["lr"] = TEXT_HEAD_LR
        notes.append(f"head learning rate {TEXT_HEAD_LR:g}: mean-pooled encoder features are small, and at "
                     f"{defaults.lr:g} the head had not converged after 100 epochs (bench/README.md, Text)")
    if decided["tune_lr"] is None:
        decided["tune_lr"] = TEXT_TUNE_LR
        notes.append(f"phase-2 learning rate {TEXT_TUNE_LR:g}: the usual rate for fine-tuning BERT-family encoders")
    decided["bag_blend"] = _bag_blend(config, facts, notes)
    decided["split_seed"] = config.resolved_split_seed
    spec = TextSpec(tokenizer=backbone.name, sequence_length=length, vocabulary=facts.vocabulary if word_level else ())
    blocks = "block (the GloVe embedding)" if word_level else "transformer layers"
    return _recipe(decided, spec, blocks, backbone.default_unfreeze, notes)


def _text_unfrozen_layers(backbone, facts: Facts, length: int, notes: list[str]) -> int:
    """Phase 2's unfrozen transformer layers: the most (2 to 4, and 2 fewer than the encoder has) that keep an
    epoch's work within :data:`TEXT_TUNE_WORK` (at least 2); 2 where the encoder's size is unknown before loading."""
    layers, width = getattr(backbone, "layers", None), getattr(backbone, "width", None)
    tokens = sum(min(n, length) for n in facts.text_lengths)
    if not (layers and width and tokens) or layers < 6:
        return 2
    work = tokens * (width / 384) ** 2
    chosen = int(max(2, min(4, layers - 2, TEXT_TUNE_WORK // work)))
    notes.append(f"phase 2 unfreezes the last {chosen} of {layers} transformer layers: the most (2 to 4) that keep an "
                 f"epoch within {TEXT_TUNE_WORK:,} token-layers on {tokens:,} training tokens (more where texts are few)")
    return chosen


def _bag_blend(config: TrainConfig, facts: Facts, notes: list[str]) -> bool:
    """Whether a text run ends by blending in a bag of token n-grams (:mod:`finetune.training.bag_blend`); the
    one fact read outside ``config`` and ``facts`` is whether scikit-learn (which fits the bag) is installed."""
    import importlib.util

    why_not = ("a task with several labels per text" if facts.multi_label else
               "--decision balanced (it shifts the network's own bias)" if config.decision == "balanced" else
               "scikit-learn, which is not installed (pip install scikit-learn)"
               if importlib.util.find_spec("sklearn") is None else None)
    if config.bag_blend and why_not:
        raise ConfigError(f"bag_blend: needs one label per text, --decision accuracy and scikit-learn; not with "
                          f"{why_not}: drop --bag-blend")
    if config.bag_blend is False:
        return False
    if why_not:
        notes.append(f"no bag-of-words blend: not with {why_not}")
        return False
    notes.append("bag-of-words blend after training: TF-IDF of the token 1-2-grams and their character 2-5-grams "
                 "+ logistic regression (C by cross-validation) fitted on the training texts, its probabilities "
                 "averaged half and half with the network's (on held-out Fine Foods training reviews the blend beat "
                 "both: bench/README.md, Text)")
    return True
