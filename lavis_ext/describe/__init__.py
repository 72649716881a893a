"""The face-description app: faces found and aligned in photos and videos, described by a
trained captioner, tracked across frames, written as a table and drawn on the media.

``expblip describe`` is :mod:`.cli`; ``expblip serve`` (:mod:`lavis_ext.serve`) builds on the
same captioner and faces. ``expblip explain`` (:mod:`.explain`) shows where the captioner
looks: the Q-Former's cross-attention (:mod:`.attention`) against AU regions built from the 5
landmarks (:mod:`.regions`).
"""
