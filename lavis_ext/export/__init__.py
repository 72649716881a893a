"""Export trained Exp-BLIP models out of the LAVIS stack (``expblip export-hf``).

``hf_blip2`` holds the LAVIS -> transformers key mapping and configs; ``writer`` writes the
model folder. Neither imports transformers' BLIP-2: the folder is for current transformers
and vLLM, while this environment runs LAVIS's pinned transformers.
"""
