"""Quality of generated text: BLEU and chrF (sacrebleu) for translations, ROUGE-1/2/L
(rouge-score) for summaries; several references per input are allowed.

BLEU needs words; Japanese, Chinese, Korean and Thai have no spaces, so their targets use
sacrebleu's `ja-mecab` tokeniser when MeCab is installed and `char` otherwise. The
tokeniser used is returned with the scores (`bleu_tokenize`), so numbers say how they
were made. chrF works on characters for every language.
"""

from __future__ import annotations

from typing import Sequence

NO_SPACE_LANGS = {"ja", "zh", "ko", "th"}


def references(output) -> list[str]:
    return list(output) if isinstance(output, list) else [str(output)]


def bleu_tokenizer(target_lang: str | None) -> str:
    if target_lang == "ja":
        try:
            import MeCab  # noqa: F401
            import ipadic  # noqa: F401

            return "ja-mecab"
        except ImportError:
            return "char"
    if target_lang == "zh":
        return "zh"
    return "char" if target_lang in NO_SPACE_LANGS else "13a"


def translation_metrics(preds: Sequence[str], refs: Sequence[list[str]], target_lang: str | None) -> dict:
    import sacrebleu

    n_refs = max(len(r) for r in refs)
    streams = [[r[i] if i < len(r) else r[0] for r in refs] for i in range(n_refs)]
    tokenize = bleu_tokenizer(target_lang)
    bleu = sacrebleu.corpus_bleu(list(preds), streams, tokenize=tokenize)
    chrf = sacrebleu.corpus_chrf(list(preds), streams)
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "bleu_tokenize": tokenize,
            "references": n_refs}


def summary_metrics(preds: Sequence[str], refs: Sequence[list[str]]) -> dict:
    """Mean F-measure; with several references each prediction takes its best one."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for p, rs in zip(preds, refs):
        best = scorer.score_multi(rs, p)
        for k in totals:
            totals[k] += best[k].fmeasure
    n = max(len(preds), 1)
    return {k: round(100 * v / n, 2) for k, v in totals.items()} | {"references": max(len(r) for r in refs)}


def text_metrics(kind: str, preds: Sequence[str], refs: Sequence[list[str]], target_lang: str | None = None
                 ) -> dict:
    if kind == "translate":
        return translation_metrics(preds, refs, target_lang)
    return summary_metrics(preds, refs)


# The one number a report leads with, per task kind.
HEADLINE = {"classify": "accuracy", "extract": "field_f1", "translate": "chrf", "summarize": "rougeL"}
