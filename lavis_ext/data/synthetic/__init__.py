"""Synthetic faces drawn from AUs, and writers of each dataset's native layout."""
from lavis_ext.data.synthetic.face import (Identity, draw_emotion, draw_face,
                                           draw_face_points, emotion_aus, random_aus,
                                           random_identity)
from lavis_ext.data.synthetic.writers import VARIANTS, WRITERS, make_synthetic

__all__ = ["Identity", "draw_face", "draw_face_points", "draw_emotion", "emotion_aus", "random_aus",
           "random_identity", "make_synthetic", "WRITERS", "VARIANTS"]
