"""The face-description app: faces found and aligned in photos and videos, described by a
trained captioner, tracked across frames, written as a table and drawn on the media.

``expblip describe`` is :mod:`.cli`; ``expblip serve`` (:mod:`lavis_ext.serve`) builds on the
same captioner and faces.
"""
