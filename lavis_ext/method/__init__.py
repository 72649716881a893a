"""The three-stage training recipe of Exp-BLIP as resumable steps over files.

One step table (:mod:`.recipe`) and one interpreter (:mod:`.steps`) serve both the paper
pipeline on real data (:mod:`.paper`, ``expblip pipeline``) and the CPU demo on synthetic faces
(:mod:`.demo`, ``expblip demo``).
"""
