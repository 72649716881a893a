"""Checks on generated captions shared by the OPT and the other-LLM tests."""


def assert_no_repeated_bigrams(tokenizer, texts):
    """no_repeat_ngram_size=2 held: no token bigram occurs twice in any caption."""
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        bigrams = list(zip(ids, ids[1:]))
        assert len(bigrams) == len(set(bigrams)), text
